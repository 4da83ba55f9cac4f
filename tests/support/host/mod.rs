//! A booted systemd host: `systemd-nspawn -b` on an overlay of the base tree.
//!
//! Commands run inside through `nsenter -t <container PID 1> -a` (no host systemd, so no
//! `machinectl`/`systemd-run -M`), or over ssh when the host has a network and an [`Ssh`].
//!
//! [`Ssh`]: super::Ssh

mod builder;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use builder::{HostBuilder, Source};

use super::cmd::{self, poll, render, run, run_ok, terminate};
use super::lease::Lease;
use super::{CGROUP_PREFIX, cgroup, fs, tail};

/// How long a boot may take before `wait_running` gives up; generous because two cores may be
/// booting several hosts and building at the same time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a host gets to shut down cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A running (or powered-off) nspawn host. Dropping it stops the host and removes its overlay,
/// cgroups and directories, also when the test panics; the boot log is kept if it panicked.
pub struct Host {
    id: String,
    name: String,
    lease: Lease,
    log: PathBuf,
    nspawn_args: Vec<String>,
    nspawn: Option<Child>,
    leader: Mutex<Option<u32>>,
    address: Option<Ipv4Addr>,
    ssh_config: Option<PathBuf>,
}

impl Host {
    /// Starts describing a host; finish with [`HostBuilder::boot`] or [`HostBuilder::start`].
    pub fn builder<'a>() -> HostBuilder<'a> {
        HostBuilder::default()
    }

    /// The host's hostname (the name given to the builder, or a generated one).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The nspawn machine name, unique on this machine; also names the cgroup and the veth.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The merged overlay: the host's `/` seen from outside. Writes show up inside at once.
    pub fn root(&self) -> PathBuf {
        self.lease.dir().join("merged")
    }

    /// The boot log (nspawn's console output).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The host's address on its `Net`, if it has one.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.address
    }

    /// Whether the host runs (booted and not powered off).
    pub fn is_running(&self) -> bool {
        self.nspawn.is_some()
    }

    /// PID of the systemd-nspawn process, while it runs.
    pub fn nspawn_pid(&self) -> Option<u32> {
        self.nspawn.as_ref().map(Child::id)
    }

    /// The host's cgroup directory name (under each hierarchy in `/sys/fs/cgroup`).
    pub fn cgroup(&self) -> String {
        cgroup_name(&self.id)
    }

    /// PID (in our namespace) of the host's systemd, i.e. the child of nspawn running `systemd`.
    /// Waits for it briefly: right after start, nspawn is still setting the container up.
    pub fn leader_pid(&self) -> Result<u32> {
        let mut cached = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pid) = *cached
            && cmd::alive(pid)
        {
            return Ok(pid);
        }
        let nspawn = self.nspawn_pid().with_context(|| format!("host {} is not running", self.name))?;
        let mut found = None;
        poll(Duration::from_secs(10), || {
            found = find_leader(nspawn);
            found.is_some() || !cmd::alive(nspawn)
        });
        let pid = found.with_context(|| {
            format!(
                "host {}: no systemd under nspawn {nspawn}; log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            )
        })?;
        *cached = Some(pid);
        Ok(pid)
    }

    /// `nsenter` into all of the host's namespaces running `args`, with a clean environment.
    pub fn command(&self, args: &[&str]) -> Result<Command> {
        let leader = self.leader_pid()?;
        let mut cmd = Command::new("nsenter");
        cmd.env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .args(["-t", &leader.to_string(), "-a", "--"])
            .args(args);
        Ok(cmd)
    }

    /// Runs `args` inside the host; the exit status is the caller's to judge.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        run(&mut self.command(args)?)
    }

    /// Runs `args` inside the host and returns stdout; a non-zero exit is an error carrying the
    /// status, stdout and stderr.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = run_ok(&mut self.command(args)?).with_context(|| format!("in host {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `systemctl args…` inside the host (raw output: `is-active` and friends exit non-zero).
    pub fn systemctl(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["systemctl"];
        full.extend_from_slice(args);
        self.exec(&full)
    }

    /// `systemctl args…` that must succeed; returns stdout.
    pub fn systemctl_ok(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["systemctl"];
        full.extend_from_slice(args);
        self.exec_ok(&full)
    }

    /// `systemctl show -p PROPERTY --value UNIT`, trimmed: one property of a unit.
    pub fn show(&self, unit: &str, property: &str) -> Result<String> {
        Ok(self.systemctl_ok(&["show", "-p", property, "--value", unit])?.trim().to_string())
    }

    /// The unit's journal entries, oldest first (`journalctl -o json`).
    pub fn journal_entries(&self, unit: &str) -> Result<Vec<super::Entry>> {
        let out = self.exec_ok(&["journalctl", "-u", unit, "-o", "json", "--no-pager"])?;
        out.lines().map(super::Entry::parse).collect()
    }

    /// The journal entries with `field=value` (e.g. kapell's own `KAPELL_UNIT=`), as JSON. Unlike
    /// `-u`, this does not depend on journald attributing an entry to its unit, which it can
    /// miss for a process that exits right after logging.
    pub fn journal_entries_with(&self, field: &str, value: &str) -> Result<Vec<super::Entry>> {
        let out = self.exec_ok(&["journalctl", &format!("{field}={value}"), "-o", "json", "--no-pager"])?;
        out.lines().map(super::Entry::parse).collect()
    }

    /// `journalctl -u unit -o short-precise --no-pager` inside the host.
    pub fn journal(&self, unit: &str) -> Result<String> {
        self.exec_ok(&["journalctl", "-u", unit, "-o", "short-precise", "--no-pager"])
    }

    /// The host's system bus, reachable from outside through `/proc/<pid>/root`.
    pub fn dbus_address(&self) -> Result<String> {
        Ok(format!("unix:path=/proc/{}/root/run/dbus/system_bus_socket", self.leader_pid()?))
    }

    /// Waits until `systemctl is-system-running` says `running` or `degraded`. On timeout, or if
    /// nspawn exits, the error lists the failed units and the end of the boot log.
    pub fn wait_running(&mut self) -> Result<()> {
        let mut state = String::new();
        let mut exited = None;
        let ok = poll(BOOT_TIMEOUT, || {
            if let Some(child) = self.nspawn.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            state = self
                .systemctl(&["is-system-running"])
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|e| format!("({e:#})"));
            state == "running" || state == "degraded"
        });
        if let Some(status) = exited {
            self.nspawn = None;
            bail!(
                "host {}: systemd-nspawn exited ({status}) while booting; log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
        if !ok {
            let failed = self
                .systemctl(&["--failed", "--no-legend", "--plain"])
                .map(|o| render(&o))
                .unwrap_or_else(|e| format!("{e:#}"));
            let jobs = self
                .systemctl(&["list-jobs", "--no-legend"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            bail!(
                "host {} not running after {BOOT_TIMEOUT:?} (state {state:?})\nfailed units: \
                 {failed}\njobs:\n{jobs}\nlog {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
        Ok(())
    }

    /// Waits until `ssh <name> true` succeeds with the test's ssh config.
    pub fn wait_ssh(&self) -> Result<()> {
        let config =
            self.ssh_config.as_ref().with_context(|| format!("host {} was built without .ssh(…)", self.name))?;
        let mut last = None;
        let ok = poll(Duration::from_secs(60), || {
            let out = run(Command::new("ssh").arg("-F").arg(config).args([&self.name, "true"]));
            let done = out.as_ref().is_ok_and(|o| o.status.success());
            last = Some(out);
            done
        });
        if !ok {
            let last = match last {
                Some(Ok(out)) => render(&out),
                Some(Err(e)) => format!("{e:#}"),
                None => String::new(),
            };
            bail!("host {}: ssh never answered: {last}", self.name);
        }
        Ok(())
    }

    /// Runs `args` on the host over ssh (as root, with the test's config); returns stdout.
    pub fn ssh_ok(&self, args: &[&str]) -> Result<String> {
        let config =
            self.ssh_config.as_ref().with_context(|| format!("host {} was built without .ssh(…)", self.name))?;
        let out = run_ok(Command::new("ssh").arg("-F").arg(config).arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Shuts the host down cleanly (nspawn turns SIGTERM into a systemd poweroff) and waits.
    /// The overlay stays, so [`Host::start_again`] boots the same disk.
    pub fn poweroff(&mut self) -> Result<()> {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(mut child) = self.nspawn.take()
            && !terminate(&mut child, STOP_GRACE)
        {
            bail!("host {} did not power off within {STOP_GRACE:?}; killed", self.name);
        }
        Ok(())
    }

    /// Boots a powered-off host again on the same upper dir and waits until it runs.
    pub fn start_again(&mut self) -> Result<()> {
        anyhow::ensure!(self.nspawn.is_none(), "host {} is still running", self.name);
        self.launch()?;
        self.wait_running()
    }

    /// `poweroff` then `start_again`: what survives is what a real reboot keeps on disk.
    pub fn reboot(&mut self) -> Result<()> {
        self.poweroff()?;
        self.start_again()
    }

    /// Spawns nspawn in the host's own cgroup, console output appended to the log.
    fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut cmd = cgroup::spawn_in(&self.cgroup(), "systemd-nspawn", &self.nspawn_args)?;
        cmd.stdin(std::process::Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("cannot start `{}`", cmd::describe(&cmd)))?;
        self.nspawn = Some(child);
        Ok(())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.nspawn.take()
            && !terminate(&mut child, STOP_GRACE)
        {
            eprintln!("kapell-test: host {} ignored SIGTERM; killed", self.name);
        }
        if let Err(e) = teardown(&self.id, self.lease.dir()) {
            eprintln!("kapell-test: cleanup of host {} failed: {e:#}", self.name);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn cgroup_name(id: &str) -> String {
    format!("{CGROUP_PREFIX}host-{id}")
}

/// Everything after nspawn has stopped (or was orphaned by a killed test): kill what is left in
/// the cgroup, unmount the overlay, delete the directories. Also the lease reaper.
fn teardown(id: &str, dir: &Path) -> Result<()> {
    cgroup::destroy(&cgroup_name(id))?;
    remove_nspawn_state(id, &dir.join("merged"))?;
    fs::remove_tree(dir)
}

/// What nspawn keeps under `/run/systemd/nspawn` while a container runs and removes when it
/// exits normally, but not when it is SIGKILLed: the mount-propagation directory (named after the
/// machine) and the image lock (named after the device and inode of the root directory).
fn remove_nspawn_state(id: &str, merged: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let run = Path::new("/run/systemd/nspawn");
    fs::remove_tree(&run.join("propagate").join(id))?;
    if let Ok(meta) = std::fs::metadata(merged) {
        let lock = run.join(format!("locks/inode-{}:{}", meta.dev(), meta.ino()));
        if lock.exists() {
            std::fs::remove_file(&lock).with_context(|| format!("cannot remove {}", lock.display()))?;
        }
    }
    Ok(())
}

/// The child of `nspawn` that has exec'd systemd (before that it is still nspawn's own code).
fn find_leader(nspawn: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(
        |&pid| {
            cmd::parent_of(pid) == Some(nspawn)
                && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd")
        },
    )
}
