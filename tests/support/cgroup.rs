//! One cgroup per nspawn host and per dockerd.
//!
//! PID 1 on the test machine is not systemd, so nothing gives our daemons a cgroup of their own.
//! Without one, every nspawn host shares the test's cgroup (a pitfall of these machines). A named cgroup also
//! lets `Drop` and the reaper find every process a host or dockerd left behind, including
//! daemonised ones (containerd shims) that are no longer our children.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cmd::{poll, signal};

const ROOT: &str = "/sys/fs/cgroup";

/// The hierarchies a spawned process is moved into (as in `sandbox.sh`): the named systemd one
/// that systemd inside nspawn manages, and the unified one.
const SPAWN_HIERARCHIES: [&str; 2] = ["systemd", "unified"];

/// A command that puts itself into cgroup `name` and then execs `program args…`, so the process
/// and all its descendants start there. The cgroup directories are created first.
pub fn spawn_in(name: &str, program: &str, args: &[String]) -> Result<Command> {
    let mut procs = Vec::new();
    for hierarchy in SPAWN_HIERARCHIES {
        let top = Path::new(ROOT).join(hierarchy);
        anyhow::ensure!(
            top.is_dir(),
            "{} is missing: the rig expects the hybrid cgroup layout (cgroup v1 named hierarchy plus unified)",
            top.display()
        );
        let dir = top.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create cgroup {}", dir.display()))?;
        procs.push(dir.join("cgroup.procs").display().to_string());
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.env("KAPELL_TEST_CGROUP_PROCS", procs.join(" "))
        .arg("-c")
        .arg(concat!(
            "for f in $KAPELL_TEST_CGROUP_PROCS; do echo $$ > \"$f\" || exit 97; done; ",
            "unset KAPELL_TEST_CGROUP_PROCS; exec \"$@\""
        ))
        .arg("sh")
        .arg(program)
        .args(args);
    Ok(cmd)
}

/// Every directory called `name` at the top of any cgroup hierarchy (docker also creates them in
/// the v1 controllers).
pub fn dirs(name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return Vec::new();
    };
    let mut seen = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path().join(name);
        if let Ok(real) = dir.canonicalize()
            && real.is_dir()
            && !seen.contains(&real)
        {
            seen.push(real);
        }
    }
    seen
}

/// PIDs in cgroup `name` or below it, in any hierarchy.
pub fn pids(name: &str) -> Vec<u32> {
    fn walk(dir: &Path, out: &mut Vec<u32>) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for dir in dirs(name) {
        walk(&dir, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// SIGKILLs everything still in cgroup `name` and waits until it is empty. Only processes we put
/// there (or their descendants) can be in it, so this never touches anything else.
pub fn kill_all(name: &str) -> Result<()> {
    let emptied = poll(Duration::from_secs(10), || {
        let pids = pids(name);
        for pid in &pids {
            signal(*pid, "KILL");
        }
        pids.is_empty()
    });
    anyhow::ensure!(emptied, "cgroup {name} still has processes: {:?}", pids(name));
    Ok(())
}

/// Removes cgroup `name` (and the sub-cgroups systemd or docker made in it) from every hierarchy.
pub fn remove(name: &str) -> Result<()> {
    fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&entry.path())?;
            }
        }
        std::fs::remove_dir(dir)
    }
    for dir in dirs(name) {
        rmdir_tree(&dir).with_context(|| format!("cannot remove cgroup {}", dir.display()))?;
    }
    Ok(())
}

/// `kill_all` then `remove`, for `Drop` and the reaper.
pub fn destroy(name: &str) -> Result<()> {
    kill_all(name)?;
    remove(name)
}
