//! What a host looks like before boot: name, files, kapell, network, ssh, docker, bind mounts.

use std::net::Ipv4Addr;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use super::{Host, teardown};
use crate::support::cmd::run_ok;
use crate::support::lease::Lease;
use crate::support::{Dockerd, Flavor, Net, Ssh, logs_dir, tree, unique_id};

/// Contents of a file to install: literal bytes (`&str`, `String`, `Vec<u8>`) or a file on the
/// test machine to copy (`&Path`, `PathBuf`).
pub enum Source {
    Contents(Vec<u8>),
    Copy(PathBuf),
}

impl From<&str> for Source {
    fn from(s: &str) -> Self {
        Source::Contents(s.as_bytes().to_vec())
    }
}
impl From<String> for Source {
    fn from(s: String) -> Self {
        Source::Contents(s.into_bytes())
    }
}
impl From<Vec<u8>> for Source {
    fn from(b: Vec<u8>) -> Self {
        Source::Contents(b)
    }
}
impl From<&Path> for Source {
    fn from(p: &Path) -> Self {
        Source::Copy(p.to_owned())
    }
}
impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Source::Copy(p)
    }
}

/// Options for a host; [`HostBuilder::start`] mounts, prepares and spawns it.
#[derive(Default)]
pub struct HostBuilder<'a> {
    name: Option<String>,
    files: Vec<(PathBuf, Source, u32)>,
    symlinks: Vec<(PathBuf, PathBuf)>,
    kapell: Option<PathBuf>,
    net: Option<(String, Ipv4Addr, u8)>,
    /// `DNS=` servers of host0 (resolved's per-link servers on a resolved tree).
    dns: Vec<Ipv4Addr>,
    flavor: Option<Flavor>,
    ssh: Option<&'a Ssh>,
    binds: Vec<(PathBuf, PathBuf, bool)>,
    before_boot: Vec<BeforeBoot<'a>>,
}

/// A step run on the host's root directory before it boots; see [`HostBuilder::before_boot`].
type BeforeBoot<'a> = Box<dyn FnOnce(&Path) -> Result<()> + 'a>;

impl<'a> HostBuilder<'a> {
    /// The hostname (default: the generated machine id). The name only has to be unique among
    /// the hosts of one test: machine names, cgroups and veths use the generated id.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Places a file at absolute path `dest` in the host before boot (parents created 0755).
    pub fn install_file(mut self, dest: impl AsRef<Path>, src: impl Into<Source>, mode: u32) -> Self {
        self.files.push((dest.as_ref().to_owned(), src.into(), mode));
        self
    }

    /// Places a symlink at absolute path `dest` pointing to `target` (e.g. to enable a unit in
    /// a `.wants/` directory before boot).
    pub fn install_symlink(mut self, dest: impl AsRef<Path>, target: impl AsRef<Path>) -> Self {
        self.symlinks.push((dest.as_ref().to_owned(), target.as_ref().to_owned()));
        self
    }

    /// Makes `binary` the host's `/usr/bin/kapell` and the `kapell-generator` beside it the
    /// host's generator, where the package puts them (read-only binds, so no copy per host).
    /// Pass `env!("CARGO_BIN_EXE_kapell")`.
    pub fn kapell(mut self, binary: impl AsRef<Path>) -> Self {
        self.kapell = Some(binary.as_ref().to_owned());
        self
    }

    /// Attaches the host to `net` with address `net.address(index)` on its `host0`. Without a
    /// net the host gets a private network namespace with loopback only.
    pub fn net(mut self, net: &Net, index: u8) -> Self {
        self.net = Some((net.name().to_owned(), net.address(index), net.prefix_len()));
        self
    }

    /// Boots from the tree of `flavor` instead of the plain one (e.g. with systemd-resolved).
    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = Some(flavor);
        self
    }

    /// Gives host0 `server` as its DNS server (`DNS=` in its network file).
    pub fn dns_server(mut self, server: Ipv4Addr) -> Self {
        self.dns.push(server);
        self
    }

    /// Lets `ssh` log in as root (needs [`HostBuilder::net`]): see [`Ssh`].
    pub fn ssh(mut self, ssh: &'a Ssh) -> Self {
        self.ssh = Some(ssh);
        self
    }

    /// Binds the socket of `dockerd` to the host's `/var/run/docker.sock`.
    pub fn docker(self, dockerd: &Dockerd) -> Self {
        self.bind(dockerd.socket_path(), "/var/run/docker.sock")
    }

    /// Extra read-write bind mount of `src` (on the machine) at `dest` (in the host).
    pub fn bind(mut self, src: impl AsRef<Path>, dest: impl AsRef<Path>) -> Self {
        self.binds.push((src.as_ref().to_owned(), dest.as_ref().to_owned(), false));
        self
    }

    /// Extra read-only bind mount.
    pub fn bind_ro(mut self, src: impl AsRef<Path>, dest: impl AsRef<Path>) -> Self {
        self.binds.push((src.as_ref().to_owned(), dest.as_ref().to_owned(), true));
        self
    }

    /// Runs `step` on the host's root (the merged overlay, seen from outside) once the files,
    /// links and kapell binary are in place and before the host boots, e.g. to install a
    /// package with `chroot ROOT dpkg -i …`. Steps run in the order given; an error stops the
    /// start, and the host is cleaned up as for any other failure.
    pub fn before_boot(mut self, step: impl FnOnce(&Path) -> Result<()> + 'a) -> Self {
        self.before_boot.push(Box::new(step));
        self
    }

    /// Starts the host and waits until systemd reports it running.
    pub fn boot(self) -> Result<Host> {
        let mut host = self.start()?;
        host.wait_running()?;
        Ok(host)
    }

    /// Starts the host without waiting, so several can boot in parallel; then call
    /// [`Host::wait_running`] on each.
    pub fn start(mut self) -> Result<Host> {
        let base = tree(self.flavor.unwrap_or(Flavor::Plain))?;
        let id = unique_id();
        let name = self.name.clone().unwrap_or_else(|| id.clone());
        let lease = Lease::acquire("host", &id, |id, dir| {
            if let Err(e) = teardown(id, dir) {
                eprintln!("kapell-test: cannot reap host {id}: {e:#}");
            }
        })?;
        let log = logs_dir()?.join(format!("host-{id}.log"));
        // From here on an error drops `host`, which undoes whatever was done.
        let mut host = Host {
            id,
            name,
            lease,
            log,
            nspawn_args: Vec::new(),
            nspawn: None,
            leader: Mutex::new(None),
            address: self.net.as_ref().map(|n| n.1),
            ssh_config: self.ssh.map(|s| s.config_path().to_owned()),
        };
        mount_overlay(&base, host.lease.dir())?;
        self.prepare(&host).with_context(|| format!("cannot prepare host {}", host.name))?;
        for step in std::mem::take(&mut self.before_boot) {
            step(&host.root()).with_context(|| format!("cannot prepare host {} before boot", host.name))?;
        }
        host.nspawn_args = self.nspawn_args(&host);
        host.launch()?;
        Ok(host)
    }

    fn prepare(&self, host: &Host) -> Result<()> {
        let root = host.root();
        write_file(&root, Path::new("/etc/hostname"), &format!("{}\n", host.name).into(), 0o644)?;
        for (dest, src, mode) in &self.files {
            write_file(&root, dest, src, *mode)?;
        }
        for (dest, target) in &self.symlinks {
            let path = root.join(dest.strip_prefix("/").unwrap_or(dest));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            symlink(target, &path).with_context(|| format!("cannot link {}", dest.display()))?;
        }
        if let Some(binary) = &self.kapell {
            anyhow::ensure!(binary.is_file(), "kapell binary {} missing", binary.display());
            // The mount point of the generator's bind (see `nspawn_args`).
            let generators = root.join("usr/lib/systemd/system-generators");
            std::fs::create_dir_all(&generators)?;
            std::fs::write(generators.join("kapell-generator"), "").context("cannot place the kapell generator")?;
            // The units the package ships (units/), where the package puts them.
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("units");
            let system = root.join("usr/lib/systemd/system");
            std::fs::create_dir_all(&system)?;
            for entry in std::fs::read_dir(&shipped)? {
                let path = entry?.path();
                let name = path.file_name().context("unit without a name")?;
                std::fs::copy(&path, system.join(name))
                    .with_context(|| format!("cannot install {}", path.display()))?;
            }
        }
        if let Some((_, addr, prefix)) = &self.net {
            // 10-: the shipped 80-container-host0.network would win over an 80- name.
            let mut network = format!(
                "[Match]\nName=host0\n\n[Network]\nAddress={addr}/{prefix}\n\
                 LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            );
            for server in &self.dns {
                network.push_str(&format!("DNS={server}\n"));
            }
            let dest = Path::new("/etc/systemd/network/10-host0.network");
            write_file(&root, dest, &network.into(), 0o644)?;
        }
        if let Some(ssh) = self.ssh {
            let (_, addr, _) = self.net.as_ref().context("HostBuilder::ssh needs HostBuilder::net")?;
            ssh.add_host(&root, &host.name, *addr)?;
        }
        Ok(())
    }

    fn nspawn_args(&self, host: &Host) -> Vec<String> {
        let mut args = vec![
            format!("--directory={}", host.root().display()),
            format!("--machine={}", host.id),
            format!("--hostname={}", host.name),
            // No host systemd to register with or to create a scope in .
            "--register=no".into(),
            "--keep-unit".into(),
            "--console=read-only".into(),
        ];
        match &self.net {
            Some((bridge, _, _)) => args.push(format!("--network-bridge={bridge}")),
            // Otherwise networkd inside would share (and could reconfigure) the machine's links.
            None => args.push("--private-network".into()),
        }
        if let Some(binary) = &self.kapell {
            args.push(format!("--bind-ro={}:/usr/bin/kapell", binary.display()));
            args.push(format!(
                "--bind-ro={}:/usr/lib/systemd/system-generators/kapell-generator",
                generator(binary).display()
            ));
        }
        for (src, dest, ro) in &self.binds {
            let flag = if *ro { "--bind-ro" } else { "--bind" };
            args.push(format!("{flag}={}:{}", src.display(), dest.display()));
        }
        args.push("--boot".into());
        args
    }
}

fn mount_overlay(base: &Path, dir: &Path) -> Result<()> {
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    run_ok(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(dir.join("merged")))
        .context("cannot mount the host overlay")?;
    Ok(())
}

fn write_file(root: &Path, dest: &Path, src: &Source, mode: u32) -> Result<()> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match src {
        Source::Contents(bytes) => std::fs::write(&path, bytes).map(drop),
        Source::Copy(from) => std::fs::copy(from, &path).map(drop),
    }
    .with_context(|| format!("cannot install {}", dest.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", dest.display()))
}

/// The generator executable built beside `kapell`; for a `kapell` without one (another build,
/// `KAPELL_BENCH_KAPELL`), `kapell` itself, which runs as the generator under that name.
fn generator(kapell: &Path) -> PathBuf {
    let own = kapell.with_file_name("kapell-generator");
    if own.is_file() { own } else { kapell.to_path_buf() }
}
