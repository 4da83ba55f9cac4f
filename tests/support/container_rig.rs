//! A booted host with kapell and a private Docker engine: what the container tests run on.
//!
//! The dockerd runs outside the host, so paths handed to Docker (bind-mount sources, staged
//! secrets) must mean the same file on both sides: a tmpfs inside the dockerd's state directory
//! is bind-mounted into the host at the same path ([`ContainerRig::shared`]), and the supervisor
//! stages secrets there (`KAPELL_SECRETS_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use super::{Dockerd, Entry, Host, HostBuilder, eventually, run_ok};

/// The locally imported image the container tests run (no registry needed).
pub const BUSYBOX: &str = "kapell-test/busybox:1";

/// A host and the Docker engine it uses. Fields drop in order: the host before the engine it binds.
pub struct ContainerRig {
    pub host: Host,
    pub dockerd: Option<Dockerd>,
    shared: PathBuf,
}

impl ContainerRig {
    /// Starts a dockerd with [`BUSYBOX`], then boots a host with kapell and `stacks`
    /// (`(name, text)`) in `/etc/kapell` (the generator renders them at boot) and the dockerd's
    /// socket at `/var/run/docker.sock`; `more` adds anything else to the host.
    pub fn boot(stacks: &[(&str, &str)], more: impl FnOnce(HostBuilder) -> HostBuilder) -> Result<ContainerRig> {
        Self::boot_with(stacks, false, more)
    }

    /// Like [`ContainerRig::boot`], with the host on the dockerd's own bridge (Docker's `bridge`
    /// network, at the top address of its /24; Docker numbers containers from the bottom), so the
    /// host reaches containers on `network = "bridge"` at their addresses, as on a real host.
    pub fn boot_on_bridge(
        stacks: &[(&str, &str)],
        more: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> Result<ContainerRig> {
        Self::boot_with(stacks, true, more)
    }

    fn boot_with(
        stacks: &[(&str, &str)],
        on_bridge: bool,
        more: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> Result<ContainerRig> {
        let dockerd = Dockerd::start()?;
        dockerd.import_busybox(BUSYBOX)?;
        // Inside the dockerd's state directory, so the rig removes it with the engine even if
        // this process is killed.
        let shared = dockerd.socket_path().parent().context("dockerd has no state directory")?.join("shared");
        std::fs::create_dir_all(&shared)?;
        run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "mode=0755,size=16m", "kt-shared"]).arg(&shared))
            .context("cannot mount the shared tmpfs")?;
        let mut builder =
            Host::builder().kapell(env!("CARGO_BIN_EXE_kapell")).docker(&dockerd).bind(&shared, &shared).install_file(
                "/etc/systemd/system.conf.d/kapell-test.conf",
                format!("[Manager]\nDefaultEnvironment=KAPELL_SECRETS_DIR={}/secrets\n", shared.display()),
                0o644,
            );
        for (name, text) in stacks {
            builder = builder.install_file(format!("/etc/kapell/{name}.toml"), *text, 0o644);
        }
        if on_bridge {
            builder = builder.net(dockerd.net(), 254);
        }
        let host = more(builder).boot()?;
        Ok(ContainerRig { host, dockerd: Some(dockerd), shared })
    }

    /// The directory both the host and the dockerd see at the same path.
    pub fn shared(&self) -> &Path {
        &self.shared
    }

    pub fn dockerd(&self) -> Result<&Dockerd> {
        self.dockerd.as_ref().context("dockerd was stopped")
    }

    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        self.host.systemctl_ok(args)
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn prop(&self, unit: &str, prop: &str) -> Result<String> {
        self.host.show(unit, prop)
    }

    /// A `*TimestampMonotonic` property in microseconds (0 if it has not happened).
    pub fn mono(&self, unit: &str, prop: &str) -> Result<u64> {
        let value = self.prop(unit, prop)?;
        value.parse().with_context(|| format!("{unit} {prop}={value:?}"))
    }

    /// Names of the containers (running or not) carrying `label=value`.
    pub fn containers(&self, label: &str) -> Result<Vec<String>> {
        let filter = format!("label={label}");
        let out = self.dockerd()?.docker_ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])?;
        let mut names: Vec<String> = out.lines().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// `docker inspect -f FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> Result<String> {
        Ok(self.dockerd()?.docker_ok(&["inspect", "-f", format, name])?.trim().to_string())
    }

    /// The unit's journal entries, oldest first: those journald filed under the unit, and the
    /// supervisor's (`KAPELL_UNIT=unit`), which journald files under no unit when the supervisor
    /// exits before it has looked up its cgroup.
    pub fn journal(&self, unit: &str) -> Result<Vec<Entry>> {
        let mut entries = self.host.journal_entries(unit)?;
        entries.extend(self.supervisor_journal(unit)?);
        entries.sort_by(|a, b| (a.mono, &a.message).cmp(&(b.mono, &b.message)));
        entries.dedup_by(|a, b| a.mono == b.mono && a.message == b.message);
        Ok(entries)
    }

    /// The lines kapell's supervisor of `unit` logged (they carry `KAPELL_UNIT=unit`).
    pub fn supervisor_journal(&self, unit: &str) -> Result<Vec<Entry>> {
        self.host.journal_entries_with("KAPELL_UNIT", unit)
    }

    /// Waits until `unit` is active; fails at once, with its journal, if it fails.
    pub fn wait_active(&self, unit: &str, timeout: Duration) -> Result<()> {
        eventually(&format!("{unit} active"), timeout, || {
            let state = self.prop(unit, "ActiveState")?;
            ensure!(state != "failed", "{unit} failed:\n{}", self.host.journal(unit)?);
            Ok(state == "active")
        })
    }
}
