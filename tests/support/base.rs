//! The shared Debian tree every host boots from (read-only lower layer of its overlay).

use std::fs::File;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result};

use super::cmd::{log_to, run, run_ok};
use super::{state_dir, tail};

/// What `debootstrap` is asked for. Also written to the marker file: a tree built from other
/// arguments is rebuilt, so changing this list takes effect without deleting the cache by hand.
const SUITE: &str = "bookworm";
const INCLUDE: &str = "systemd,systemd-sysv,dbus,openssh-server,iproute2,sqlite3,socat";

/// Packages a flavor of the tree adds to [`INCLUDE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The plain tree every host boots from unless it asks for more.
    Plain,
    /// With systemd-resolved (per-domain DNS routing): `base-resolved`.
    Resolved,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Plain => "base",
            Flavor::Resolved => "base-resolved",
        }
    }

    fn include(self) -> String {
        match self {
            Flavor::Plain => INCLUDE.to_string(),
            Flavor::Resolved => format!("{INCLUDE},systemd-resolved"),
        }
    }
}

/// Path of the cached base tree, building it first if needed (about a minute, once per machine).
///
/// Safe to call from many threads and test binaries at once: a file lock makes one caller build
/// while the others wait. The tree is built under a temporary name and renamed into place, and
/// the marker file is written after the rename, so a crash never leaves a half tree that looks
/// complete.
pub fn base_tree() -> Result<PathBuf> {
    tree(Flavor::Plain)
}

/// [`base_tree`] of a flavor, each cached and built the same way.
pub fn tree(flavor: Flavor) -> Result<PathBuf> {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    static RESOLVED: OnceLock<PathBuf> = OnceLock::new();
    let done = match flavor {
        Flavor::Plain => &PLAIN,
        Flavor::Resolved => &RESOLVED,
    };
    if let Some(path) = done.get() {
        return Ok(path.clone());
    }
    super::require_root()?;
    let path =
        build_once(flavor).with_context(|| format!("cannot provide the {} tree for test hosts", flavor.name()))?;
    Ok(done.get_or_init(|| path).clone())
}

fn marker_text(flavor: Flavor) -> String {
    format!("debootstrap --variant=minbase --include={} {SUITE}\n", flavor.include())
}

fn build_once(flavor: Flavor) -> Result<PathBuf> {
    let root = state_dir();
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let name = flavor.name();
    let base = root.join(name);
    let marker = root.join(format!("{name}.complete"));
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;

    if std::fs::read_to_string(&marker).ok().as_deref() == Some(marker_text(flavor).as_str())
        && base.join("lib/systemd/systemd").exists()
    {
        return Ok(base);
    }
    let _ = std::fs::remove_file(&marker);
    let building = root.join(format!("{name}.building"));
    for stale in [&base, &building] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).with_context(|| format!("cannot remove stale {}", stale.display()))?;
        }
    }
    let started = Instant::now();
    debootstrap(&building, flavor)?;
    prepare(&building)?;
    std::fs::rename(&building, &base)
        .with_context(|| format!("cannot rename {} to {}", building.display(), base.display()))?;
    std::fs::write(&marker, marker_text(flavor)).with_context(|| format!("cannot write {}", marker.display()))?;
    eprintln!("kapell-test: built base tree {} in {:.1?}", base.display(), started.elapsed());
    Ok(base)
}

/// The mirror this machine's apt already uses (deb822 `URIs:` line), as `sandbox.sh` does.
fn mirror() -> Result<String> {
    let path = "/etc/apt/sources.list.d/debian.sources";
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next())
        .map(str::to_owned)
        .with_context(|| format!("no URIs: line in {path}"))
}

fn debootstrap(dir: &Path, flavor: Flavor) -> Result<()> {
    let log = state_dir().join(format!("debootstrap-{}.log", flavor.name()));
    let (stdout, stderr) = log_to(&log)?;
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", flavor.include()))
        .arg(SUITE)
        .arg(dir)
        .arg(mirror()?)
        .stdout(stdout)
        .stderr(stderr);
    let status = cmd.status().context("cannot run debootstrap (apt-get install debootstrap)")?;
    anyhow::ensure!(status.success(), "debootstrap failed ({status}); log {}:\n{}", log.display(), tail(&log, 30));
    Ok(())
}

/// Turns a fresh debootstrap into something every host can share (pitfalls of these machines): no machine
/// id (each boot makes its own), no ssh host keys (each host gets its own), and networkd enabled
/// so `/etc/systemd/network/10-host0.network` configures the veth.
fn prepare(dir: &Path) -> Result<()> {
    let remove = |rel: &str| -> Result<()> {
        let path = dir.join(rel);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    };
    run_ok(Command::new("find").arg(dir.join("var/cache/apt/archives")).args(["-name", "*.deb", "-delete"]))?;
    std::fs::write(dir.join("etc/machine-id"), "").context("cannot empty etc/machine-id")?;
    remove("var/lib/dbus/machine-id")?;
    for entry in std::fs::read_dir(dir.join("etc/ssh")).context("no etc/ssh in base tree")? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            remove(&format!("etc/ssh/{}", entry.file_name().to_string_lossy()))?;
        }
    }
    for (unit, target) in
        [("systemd-networkd.service", "multi-user.target.wants"), ("systemd-networkd.socket", "sockets.target.wants")]
    {
        let wants = dir.join("etc/systemd/system").join(target);
        std::fs::create_dir_all(&wants).with_context(|| format!("cannot create {}", wants.display()))?;
        let link = wants.join(unit);
        if link.symlink_metadata().is_err() {
            symlink(format!("/lib/systemd/system/{unit}"), &link)
                .with_context(|| format!("cannot link {}", link.display()))?;
        }
    }
    // Catch a broken tree here rather than as a host that never boots.
    let out = run(Command::new("chroot").arg(dir).args(["systemctl", "--version"]))?;
    anyhow::ensure!(out.status.success(), "systemd does not run in the base tree: {}", super::cmd::render(&out));
    Ok(())
}
