//! Checks that a test's hosts, nets and dockerds left nothing behind once dropped.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Dockerd, Host, Net, cgroup, cmd, fs};

/// What some rig objects own on the machine, recorded before they are dropped.
#[derive(Default)]
pub struct Footprint {
    pids: Vec<u32>,
    /// Interface name and index: a bridge name is reused as soon as its subnet is free (maybe by
    /// another test process), the index is not.
    links: Vec<(String, Option<u32>)>,
    dirs: Vec<PathBuf>,
    cgroups: Vec<String>,
}

impl Footprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// nspawn and the host's systemd, its veth, overlay directory, nspawn's runtime directory and
    /// the cgroup.
    pub fn host(mut self, host: &Host) -> Self {
        self.pids.extend(host.nspawn_pid());
        self.pids.extend(host.leader_pid().ok());
        self.links.push(link(&format!("vb-{}", host.id())));
        self.dirs.extend(host.root().parent().map(PathBuf::from));
        self.dirs.push(PathBuf::from("/run/systemd/nspawn/propagate").join(host.id()));
        self.cgroups.push(host.cgroup());
        self
    }

    /// The bridge.
    pub fn net(mut self, net: &Net) -> Self {
        self.links.push(link(net.name()));
        self
    }

    /// dockerd, its bridge, directories and cgroups.
    pub fn dockerd(mut self, dockerd: &Dockerd) -> Self {
        self.pids.extend(dockerd.pid());
        self.links.push(link(dockerd.net().name()));
        self.dirs.extend(dockerd.socket_path().parent().map(PathBuf::from));
        self.cgroups.extend(dockerd.cgroups());
        self
    }

    /// Fails with a list of everything still present.
    pub fn assert_gone(&self) -> Result<()> {
        let mut left = Vec::new();
        left.extend(self.pids.iter().filter(|&&p| cmd::alive(p)).map(|p| format!("process {p}")));
        for (name, index) in &self.links {
            if index.is_some() && ifindex(name) == *index {
                left.push(format!("link {name}"));
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

fn link(name: &str) -> (String, Option<u32>) {
    (name.to_owned(), ifindex(name))
}

fn ifindex(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).ok()?;
    text.trim().parse().ok()
}
