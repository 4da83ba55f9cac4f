//! The packages: what the .deb and the .rpm contain, lintian's verdict on the .deb, and
//! the real thing: the .deb installed with `dpkg -i` into a fresh Debian tree, a stack put in its
//! /etc/kapell, the host booted, the stack up with no kapell command run by hand; then the package
//! removed and purged inside the running host, the units gone and the operator's stack kept.
//!
//! The packages come from `KAPELL_DEB` / `KAPELL_RPM` when set (CI builds them once with
//! `packaging/build`), otherwise this test runs `packaging/build` itself. Needs root, the rig's
//! packages (.ci/deps), cargo-deb, cargo-generate-rpm, lintian and rpm; a missing piece fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use support::{Host, eventually};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// The packages under test: from the environment, or built once per test process.
fn packages() -> Result<&'static Packages> {
    static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();
    let from_env = |var: &str| std::env::var_os(var).map(PathBuf::from);
    BUILT
        .get_or_init(|| {
            let (deb, rpm) = match (from_env("KAPELL_DEB"), from_env("KAPELL_RPM")) {
                (Some(deb), Some(rpm)) => (deb, rpm),
                (None, None) => build().map_err(|e| format!("{e:#}"))?,
                _ => return Err("set both KAPELL_DEB and KAPELL_RPM, or neither".into()),
            };
            for p in [&deb, &rpm] {
                if !p.is_file() {
                    return Err(format!("package {} does not exist", p.display()));
                }
            }
            Ok(Packages { deb, rpm })
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("no packages to test: {e}"))
}

/// Runs `packaging/build`, which prints the paths of the .deb and the .rpm.
fn build() -> Result<(PathBuf, PathBuf)> {
    let out = support::run_ok(Command::new(repo().join("packaging/build")).current_dir(repo()))
        .context("packaging/build failed (cargo install --locked cargo-deb cargo-generate-rpm)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let find = |ext: &str| {
        stdout
            .lines()
            .find(|l| l.ends_with(ext))
            .map(PathBuf::from)
            .with_context(|| format!("packaging/build printed no {ext} path:\n{stdout}"))
    };
    Ok((find(".deb")?, find(".rpm")?))
}

/// Units of `units/`, which both packages install into /usr/lib/systemd/system/.
fn shipped_units() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(repo().join("units")) else { return Vec::new() };
    let mut units: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| format!("/usr/lib/systemd/system/{}", e.file_name().to_string_lossy()))
        .collect();
    units.sort();
    units
}

/// The files both packages install; `zsh` is where the distribution's zsh looks.
fn expected_files(zsh: &str) -> Vec<String> {
    let mut files: Vec<String> = [
        "/etc/kapell/README",
        "/usr/bin/kapell",
        "/usr/lib/systemd/system-generators/kapell-generator",
        "/usr/share/bash-completion/completions/kapell",
        "/usr/share/doc/kapell/examples/hello.toml",
        "/usr/share/fish/vendor_completions.d/kapell.fish",
        "/usr/share/man/man5/kapell-fleet.toml.5.gz",
        "/usr/share/man/man5/kapell.toml.5.gz",
        "/usr/share/man/man8/kapell-generator.8.gz",
        "/usr/share/man/man8/kapell.8.gz",
        zsh,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.extend(shipped_units());
    files.sort();
    files
}

/// Exit status and output of a command, for error messages.
fn render(out: &std::process::Output) -> String {
    format!("{}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn stdout_of(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&support::run_ok(cmd)?.stdout).into_owned())
}

#[test]
fn rpm_installs_the_expected_files() -> Result<()> {
    let rpm = &packages()?.rpm;
    let listed = stdout_of(Command::new("rpm").arg("-qlp").arg(rpm)).context("rpm -qlp (apt-get install rpm)")?;
    let mut listed: Vec<String> = listed.lines().map(str::to_string).collect();
    listed.sort();
    let expected = expected_files("/usr/share/zsh/site-functions/_kapell");
    ensure!(listed == expected, "rpm -qlp {}:\n{listed:#?}\nexpected:\n{expected:#?}", rpm.display());

    // The generator must be executable, the README a config file rpm never overwrites.
    let modes = stdout_of(Command::new("rpm").args(["-qp", "--dump"]).arg(rpm))?;
    let line = |path: &str| modes.lines().find(|l| l.starts_with(&format!("{path} "))).unwrap_or_default().to_string();
    ensure!(line("/usr/lib/systemd/system-generators/kapell-generator").contains(" 0100755 "), "generator mode");
    ensure!(line("/usr/bin/kapell").contains(" 0100755 "), "binary mode");
    let config = stdout_of(Command::new("rpm").args(["-qpc"]).arg(rpm))?;
    ensure!(config.trim() == "/etc/kapell/README", "rpm config files: {config}");
    let scripts = stdout_of(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm))?;
    for scriptlet in ["postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"] {
        ensure!(scripts.contains(scriptlet), "no {scriptlet} in:\n{scripts}");
    }
    ensure!(
        scripts.matches("systemctl --system daemon-reload").count() == 2,
        "post and postun reload systemd:\n{scripts}"
    );
    ensure!(!scripts.contains("rm "), "scriptlets must not delete files:\n{scripts}");
    Ok(())
}

#[test]
fn deb_installs_the_expected_files() -> Result<()> {
    let deb = &packages()?.deb;
    let listing = stdout_of(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    // "-rw-r--r-- 0/0 534 2026-11-23 00:00 ./etc/kapell/README" (links end in " -> target").
    let mut files = Vec::new();
    let mut generator_mode = None;
    for line in listing.lines().filter(|l| !l.starts_with('d')) {
        let path = line.split(" ./").nth(1).with_context(|| format!("odd dpkg-deb line {line:?}"))?;
        let path = path.split_once(" -> ").map_or(path, |(link, _)| link);
        if path.ends_with("kapell-generator") {
            generator_mode = line.split_whitespace().next().map(str::to_string);
        }
        files.push(format!("/{path}"));
    }
    // cargo-deb adds these two to every package.
    files.retain(|f| f != "/usr/share/doc/kapell/copyright" && f != "/usr/share/doc/kapell/changelog.Debian.gz");
    files.sort();
    let mut expected = expected_files("/usr/share/zsh/vendor-completions/_kapell");
    // Debian only: why lintian's embedded-library check does not apply (see the file).
    expected.push("/usr/share/lintian/overrides/kapell".to_string());
    expected.sort();
    ensure!(files == expected, "dpkg-deb --contents {}:\n{files:#?}\nexpected:\n{expected:#?}", deb.display());
    // The generator is an executable of its own, not a link to `kapell`.
    ensure!(generator_mode.as_deref() == Some("-rwxr-xr-x"), "generator: {generator_mode:?}");
    let conffiles = stdout_of(
        Command::new("sh").arg("-c").arg("dpkg-deb --ctrl-tarfile \"$1\" | tar -xO ./conffiles").arg("sh").arg(deb),
    )?;
    ensure!(conffiles.trim() == "/etc/kapell/README", "conffiles: {conffiles}");
    Ok(())
}

/// lintian reports no error, and no warning but the one that only matters for an upload to
/// Debian itself (a first upload is expected to close an ITP bug).
#[test]
fn deb_passes_lintian() -> Result<()> {
    let deb = &packages()?.deb;
    let out = support::run(Command::new("lintian").arg("--pedantic").arg(deb)).context("apt-get install lintian")?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    const ACCEPTED: &[&str] = &["initial-upload-closes-no-bugs"];
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .filter(|l| !ACCEPTED.iter().any(|tag| l.contains(&format!(": {tag}"))))
        .collect();
    ensure!(problems.is_empty(), "lintian {}:\n{report}", deb.display());
    ensure!(!report.contains("E:"), "lintian errors:\n{report}");
    Ok(())
}

const STACK: &str = r#"# The operator's stack: native services only, so no Docker is needed.
description = "Package test"

[services.init]
exec = ["/bin/sh", "-c", "echo done > /run/pkgtest-init"]
type = "oneshot"

[services.web]
exec = ["/bin/sleep", "infinity"]
requires = ["init"]
"#;

/// A second stack with a typo: the generator must skip it, report it, and still generate the other.
const BROKEN: &str = "[services.web]\nexec = [\"/bin/true\"]\nrestrat = \"always\"\n";

const UNITS: [&str; 3] = ["pkgtest.target", "pkgtest-init.service", "pkgtest-web.service"];

/// Installs the .deb into a fresh tree the way an image build would (dpkg in a chroot, before
/// the first boot), then lets systemd do the rest.
#[test]
fn deb_boots_a_stack_and_removes_cleanly() -> Result<()> {
    let deb = packages()?.deb.clone();
    let host = Host::builder()
        .name("pkghost")
        .install_file("/var/cache/kapell-test/kapell.deb", deb.as_path(), 0o644)
        .before_boot(|root| {
            support::run_ok(
                Command::new("chroot")
                    .arg(root)
                    .args(["dpkg", "-i", "/var/cache/kapell-test/kapell.deb"])
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            )
            .context("dpkg -i in the host tree")?;
            // The operator's stack arrives after the package, as it would on a real machine.
            std::fs::write(root.join("etc/kapell/pkgtest.toml"), STACK).context("write the stack")?;
            std::fs::write(root.join("etc/kapell/broken.toml"), BROKEN).context("write the broken stack")?;
            Ok(())
        })
        .boot()?;

    // Booted with no kapell command: the generator ran, the target pulled the services in.
    eventually("the stack's units to be active", Duration::from_secs(60), || {
        Ok(UNITS.iter().all(|u| host.show(u, "ActiveState").is_ok_and(|s| s == "active")))
    })
    .with_context(|| {
        let status =
            host.systemctl(&["status", "--no-pager", "pkgtest.target", "pkgtest-init.service", "pkgtest-web.service"]);
        let status = status.map(|o| render(&o)).unwrap_or_else(|e| format!("{e:#}"));
        let console = std::fs::read_to_string(host.log_path()).unwrap_or_default();
        format!("{status}\nconsole:\n{console}")
    })?;
    for unit in UNITS {
        let fragment = host.show(unit, "FragmentPath")?;
        ensure!(fragment == format!("/run/systemd/generator/{unit}"), "{unit} comes from {fragment}");
    }
    ensure!(host.show("pkgtest-web.service", "SourcePath")? == "/etc/kapell/pkgtest.toml");
    ensure!(host.exec_ok(&["cat", "/run/pkgtest-init"])? == "done\n", "the oneshot ran");
    ensure!(
        host.systemctl_ok(&["is-enabled", "pkgtest.target"])?.trim() == "generated",
        "the stack target is enabled by the generator's link"
    );
    // The federation daemon and the DNS responder ship disabled: neither runs on a host that
    // did not ask for it.
    for unit in ["kapell-federation.service", "kapell-dns.service"] {
        let enabled = host.systemctl(&["is-enabled", unit])?;
        let enabled = String::from_utf8_lossy(&enabled.stdout).trim().to_string();
        ensure!(enabled == "disabled", "{unit} is {enabled:?}, expected disabled");
        ensure!(host.show(unit, "ActiveState")? == "inactive", "{unit} runs");
    }
    // The broken stack was skipped, the good one generated anyway, and the generator's exit status
    // told systemd (its message on the console; nspawn has no /dev/kmsg for the generator's own).
    ensure!(host.show("broken.target", "LoadState")? == "not-found", "broken stack generated");
    let console = std::fs::read_to_string(host.log_path())?;
    ensure!(
        console.contains("kapell-generator failed with exit status 3"),
        "systemd did not report the generator's failure:\n{console}"
    );
    ensure!(
        console.contains("kapell-generator: stack broken skipped: it has errors"),
        "the generator did not say which stack it skipped:\n{console}"
    );

    // Removal: prerm stops the stack, postrm reloads, the generator is gone with the package.
    host.exec_ok(&["dpkg", "-r", "kapell"]).context("dpkg -r kapell")?;
    host.systemctl_ok(&["daemon-reload"])?;
    for unit in UNITS {
        ensure!(host.show(unit, "LoadState")? == "not-found", "{unit} still loaded after removal");
        ensure!(host.show(unit, "ActiveState")? == "inactive", "{unit} still active after removal");
        let file = format!("/run/systemd/generator/{unit}");
        ensure!(!host.exec(&["test", "-e", &file])?.status.success(), "{file} left after removal");
    }
    // (No procps in a minimal tree: look for the service's `sleep` in /proc.)
    let sleepers = host.exec_ok(&[
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = sleep ] && echo $p; done; true",
    ])?;
    ensure!(sleepers.trim().is_empty(), "the service's process survived: {sleepers}");
    for gone in ["usr/bin/kapell", "usr/lib/systemd/system-generators/kapell-generator"] {
        ensure!(host.root().join(gone).symlink_metadata().is_err(), "/{gone} left after removal");
    }
    let etc = host.root().join("etc/kapell");
    ensure!(std::fs::read_to_string(etc.join("pkgtest.toml"))? == STACK, "the stack must survive removal");
    ensure!(etc.join("broken.toml").exists(), "every operator file survives removal");
    ensure!(etc.join("README").exists(), "removal (not purge) keeps the conffile");

    // Purge: dpkg drops its conffile; the operator's files and so the directory stay.
    host.exec_ok(&["dpkg", "--purge", "kapell"]).context("dpkg --purge kapell")?;
    ensure!(std::fs::read_to_string(etc.join("pkgtest.toml"))? == STACK, "the stack must survive purge");
    ensure!(!etc.join("README").exists(), "purge removes the package's README");
    let status = host.exec(&["dpkg", "-s", "kapell"])?;
    ensure!(!status.status.success(), "kapell still known to dpkg: {}", render(&status));

    let footprint = support::Footprint::new().host(&host);
    drop(host);
    footprint.assert_gone()
}
