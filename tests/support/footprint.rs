//! Checks that a test's hosts, nets and dockerds left nothing behind once dropped.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use super::{Dockerd, Host, Net, cgroup, cmd, fs};

/// What some rig objects own on the machine, recorded before they are dropped.
#[derive(Default)]
pub struct Footprint {
    pids: Vec<u32>,
    links: Vec<String>,
    dirs: Vec<PathBuf>,
    cgroups: Vec<String>,
}

impl Footprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// nspawn and the host's systemd, its veth, overlay directory and cgroup.
    pub fn host(mut self, host: &Host) -> Self {
        self.pids.extend(host.nspawn_pid());
        self.pids.extend(host.leader_pid().ok());
        self.links.push(format!("vb-{}", host.id()));
        self.dirs.extend(host.root().parent().map(PathBuf::from));
        self.cgroups.push(host.cgroup());
        self
    }

    /// The bridge.
    pub fn net(mut self, net: &Net) -> Self {
        self.links.push(net.name().to_owned());
        self
    }

    /// dockerd, its bridge, directories and cgroups.
    pub fn dockerd(mut self, dockerd: &Dockerd) -> Self {
        self.pids.extend(dockerd.pid());
        self.links.push(dockerd.net().name().to_owned());
        self.dirs.extend(dockerd.socket_path().parent().map(PathBuf::from));
        self.cgroups.extend(dockerd.cgroups());
        self
    }

    /// Fails with a list of everything still present.
    pub fn assert_gone(&self) -> Result<()> {
        let mut left = Vec::new();
        left.extend(self.pids.iter().filter(|&&p| cmd::alive(p)).map(|p| format!("process {p}")));
        for link in &self.links {
            let out = cmd::run(Command::new("ip").args(["-o", "link", "show", "dev", link]))?;
            if out.status.success() {
                left.push(format!("link {link}"));
            }
        }
        for dir in &self.dirs {
            left.extend(fs::mounts_below(dir).iter().map(|m| format!("mount {}", m.display())));
            if dir.exists() {
                left.push(format!("directory {}", dir.display()));
            }
        }
        for name in &self.cgroups {
            left.extend(cgroup::dirs(name).iter().map(|d| format!("cgroup {}", d.display())));
        }
        if !left.is_empty() {
            bail!("left behind: {}", left.join(", "));
        }
        Ok(())
    }
}
