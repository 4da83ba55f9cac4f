//! The one SSH transport (see docs/decisions.md, why SSH): the system OpenSSH client, so
//! `~/.ssh/config` (or the fleet's `ssh_config`), agents, ProxyJump and known_hosts work as
//! operators expect.
//!
//! Every call runs `ssh … -- <address> kapell receive` with the request on stdin: the remote
//! command is a constant, and no user value is ever part of a remote shell string (the address
//! is ssh's destination argument after `--`). Options kapell always sets:
//! - `BatchMode=yes`: never a prompt; `StrictHostKeyChecking=yes`: an unknown or changed host
//!   key fails (ssh's own check; kapell never weakens it);
//! - `ConnectTimeout`, `ServerAliveInterval`/`CountMax`: a dead host fails in seconds;
//! - `ControlMaster=auto` with kapell's own `ControlPath` (`<runtime dir>/ssh/%C`, a short hash
//!   path) and `ControlPersist`: later requests to the host reuse the connection (one round
//!   trip, no handshake), and the user's own ControlMaster sockets are never used.

use super::config::Defaults;
use crate::fleet::protocol::RECEIVE_COMMAND;
use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Seconds ssh waits for a TCP connection and the handshake.
const CONNECT_TIMEOUT_SECS: u32 = 5;
/// Keepalives: a peer that stops answering for 3 × 5 s is given up.
const ALIVE_INTERVAL_SECS: u32 = 5;
const ALIVE_COUNT: u32 = 3;
/// How long an idle master connection stays up for the next request.
const PERSIST: &str = "120s";

/// How kapell reaches its peers.
#[derive(Debug, Clone)]
pub struct Ssh {
    user: Option<String>,
    config: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    control_dir: PathBuf,
}

/// Why a request did not get a reply.
#[derive(Debug)]
pub enum Failure {
    /// ssh could not connect or authenticate (exit 255), with ssh's own words and kapell's reading.
    Unreachable(String),
    /// The host key is unknown or changed: never accepted.
    HostKey(String),
    /// The peer ran something that did not answer with a reply (old or missing kapell, …).
    Peer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(s) | Failure::HostKey(s) | Failure::Peer(s) => f.write_str(s),
        }
    }
}

impl Ssh {
    pub fn new(defaults: &Defaults) -> Result<Ssh> {
        let control_dir = crate::lock::runtime_dir().join("ssh");
        std::fs::create_dir_all(&control_dir).with_context(|| format!("cannot create {}", control_dir.display()))?;
        // ssh refuses control sockets in a directory others can write to.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&control_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", control_dir.display()))?;
        Ok(Ssh {
            user: defaults.ssh_user.clone(),
            config: defaults.ssh_config.clone(),
            known_hosts: defaults.known_hosts.clone(),
            control_dir,
        })
    }

    /// The ssh command line for `address`, without the remote command; `fresh`: a connection
    /// of its own, not through (or becoming) the shared master.
    pub fn command(&self, address: &str, fresh: bool) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(config) = &self.config {
            cmd.arg("-F").arg(config);
        }
        let opt = |cmd: &mut Command, o: String| {
            cmd.arg("-o").arg(o);
        };
        opt(&mut cmd, "BatchMode=yes".into());
        opt(&mut cmd, "StrictHostKeyChecking=yes".into());
        if let Some(known) = &self.known_hosts {
            // One ssh_config word: double quotes keep blanks in it (fleet.toml refuses `"`, `%`).
            opt(&mut cmd, format!("UserKnownHostsFile=\"{}\"", known.display()));
        }
        opt(&mut cmd, format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"));
        opt(&mut cmd, format!("ServerAliveInterval={ALIVE_INTERVAL_SECS}"));
        opt(&mut cmd, format!("ServerAliveCountMax={ALIVE_COUNT}"));
        if fresh {
            opt(&mut cmd, "ControlMaster=no".into());
            opt(&mut cmd, "ControlPath=none".into());
        } else {
            opt(&mut cmd, "ControlMaster=auto".into());
            opt(&mut cmd, format!("ControlPath={}/%C", self.control_dir.display()));
            opt(&mut cmd, format!("ControlPersist={PERSIST}"));
        }
        if let Some(user) = &self.user {
            cmd.arg("-l").arg(user);
        }
        // No pty, no stdin tricks: the request is the whole of stdin.
        cmd.arg("-T").arg("--").arg(address);
        cmd
    }

    /// The IP address ssh connects to for `address` after its configuration (`ssh -G`: the
    /// `HostName` of a `Host` alias), if that is an IP address. Nothing is connected to.
    pub fn configured_ip(&self, address: &str) -> Option<std::net::IpAddr> {
        let mut cmd = Command::new("ssh");
        if let Some(config) = &self.config {
            cmd.arg("-F").arg(config);
        }
        let out = cmd.arg("-G").arg("--").arg(address).stdin(std::process::Stdio::null()).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().find_map(|l| l.strip_prefix("hostname ")).and_then(|h| h.trim().parse().ok())
    }

    /// Sends `request` to `kapell receive` on `address` and returns its reply (stdout), or why
    /// there was none. `deadline` bounds the whole exchange.
    pub fn request(&self, address: &str, request: &[u8], deadline: Duration, fresh: bool) -> Result<Vec<u8>, Failure> {
        let mut cmd = self.command(address, fresh);
        cmd.arg(RECEIVE_COMMAND).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Failure::Unreachable(format!("cannot run ssh: {e}")))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let body = request.to_vec();
        // Written from a thread so a peer that answers early (a refusal) cannot deadlock us.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(deadline) {
            Ok(output) => output.map_err(|e| Failure::Unreachable(format!("ssh failed: {e}")))?,
            Err(_) => {
                // Our own child, by PID.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
                return Err(Failure::Unreachable(format!("no reply within {}s", deadline.as_secs())));
            }
        };
        let _ = writer.join();
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if output.status.code() == Some(255) {
            return Err(classify(address, &stderr));
        }
        if output.stdout.is_empty() {
            let status = output.status.code().map_or("a signal".to_string(), |c| format!("status {c}"));
            return Err(Failure::Peer(format!(
                "`{}` on {address} exited with {status} and no reply{}",
                RECEIVE_COMMAND,
                if stderr.is_empty() { String::new() } else { format!(": {}", last_lines(&stderr, 3)) }
            )));
        }
        Ok(output.stdout)
    }
}

/// ssh's failure in one sentence that says what to do.
fn classify(address: &str, stderr: &str) -> Failure {
    let said = last_lines(stderr, 2);
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || stderr.contains("Host key for") {
        Failure::HostKey(format!(
            "the host key of {address} has CHANGED since it was recorded in known_hosts: refusing to connect \
             (if the host was reinstalled, remove the old key with `ssh-keygen -R`, then verify and add the new one)"
        ))
    } else if stderr.contains("No ") && stderr.contains("host key is known")
        || stderr.contains("Host key verification failed")
    {
        Failure::HostKey(format!(
            "the host key of {address} is not in known_hosts: refusing to connect (verify the key and add it to \
             known_hosts first; kapell never accepts an unknown key)"
        ))
    } else {
        Failure::Unreachable(format!("cannot reach {address} over ssh: {said}"))
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
