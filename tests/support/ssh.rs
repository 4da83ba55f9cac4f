//! ssh from the test machine into hosts, with nothing read from the invoking user's `~/.ssh`.
//!
//! ssh finds `~/.ssh/config` through the passwd entry, not `$HOME` (a pitfall of these machines), so every
//! call must pass `-F config_path()`. kapell's fleet tests put the same path in `fleet.toml`.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use tempfile::TempDir;

use super::cmd::run_ok;
use super::state_dir;

/// A client key, a `known_hosts` and an ssh config for one test. Hosts built with
/// `HostBuilder::ssh` trust the key and are added to `known_hosts` (by address and by name) and
/// to the config (`Host <name>` with `HostName <address>`), so `ssh -F config <name>` works.
pub struct Ssh {
    /// Holds the files below; removed on drop.
    _dir: TempDir,
    key: PathBuf,
    config: PathBuf,
    known_hosts: PathBuf,
}

impl Ssh {
    /// Generates an ed25519 client key and writes the config: root login with that key only,
    /// strict host key checking against our `known_hosts`, never a prompt, short timeout.
    pub fn new() -> Result<Ssh> {
        std::fs::create_dir_all(state_dir()).with_context(|| format!("cannot create {}", state_dir().display()))?;
        let dir =
            tempfile::Builder::new().prefix("ssh-").tempdir_in(state_dir()).context("cannot create ssh temp dir")?;
        let key = dir.path().join("id_ed25519");
        let config = dir.path().join("config");
        let known_hosts = dir.path().join("known_hosts");
        let keygen = ["-q", "-t", "ed25519", "-N", "", "-C", "kapell-test", "-f"];
        run_ok(Command::new("ssh-keygen").args(keygen).arg(&key)).context("cannot generate the ssh client key")?;
        std::fs::write(&known_hosts, "").context("cannot create known_hosts")?;
        let text = format!(
            "Host *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 3\n  LogLevel ERROR\n",
            key = key.display(),
            known = known_hosts.display()
        );
        std::fs::write(&config, text).context("cannot write ssh config")?;
        Ok(Ssh { _dir: dir, key, config, known_hosts })
    }

    /// The file to pass as `ssh -F`.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn key_path(&self) -> &Path {
        &self.key
    }

    pub fn known_hosts_path(&self) -> &Path {
        &self.known_hosts
    }

    /// `ssh -F <config> <dest>`; append the remote command with `.args(…)`.
    pub fn command(&self, dest: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.config).arg(dest);
        cmd
    }

    /// Makes the tree at `root` (a host before boot) trust our key, gives it its own host keys,
    /// and records them in `known_hosts` and the config under `name` and `addr`.
    pub(super) fn add_host(&self, root: &Path, name: &str, addr: Ipv4Addr) -> Result<()> {
        let ssh_dir = root.join("root/.ssh");
        std::fs::create_dir_all(&ssh_dir).with_context(|| format!("cannot create {}", ssh_dir.display()))?;
        std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))?;
        let pubkey =
            std::fs::read_to_string(self.key.with_extension("pub")).context("cannot read the client public key")?;
        let authorized = ssh_dir.join("authorized_keys");
        append(&authorized, &pubkey)?;
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600))?;

        run_ok(Command::new("ssh-keygen").args(["-q", "-A", "-f"]).arg(root))
            .with_context(|| format!("cannot generate host keys for {name}"))?;
        let host_key = root.join("etc/ssh/ssh_host_ed25519_key.pub");
        let host_key =
            std::fs::read_to_string(&host_key).with_context(|| format!("cannot read {}", host_key.display()))?;
        let key_fields: Vec<&str> = host_key.split_whitespace().take(2).collect();
        append(&self.known_hosts, &format!("{addr},{name} {}\n", key_fields.join(" ")))?;
        append(&self.config, &format!("Host {name}\n  HostName {addr}\n"))
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))
}
