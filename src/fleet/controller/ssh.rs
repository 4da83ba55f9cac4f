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
//! - On a confirmation's new connection only, and only where the operator left ssh's key
//!   exchange at its default, the fastest key exchange of that default list first (see
//!   [`confirmation_kex`]).

use super::config::Defaults;
use crate::fleet::protocol::RECEIVE_COMMAND;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Seconds ssh waits for a TCP connection and the handshake.
const CONNECT_TIMEOUT_SECS: u32 = 5;
/// Keepalives: a peer that stops answering for 3 × 5 s is given up.
const ALIVE_INTERVAL_SECS: u32 = 5;
const ALIVE_COUNT: u32 = 3;
/// How long an idle master connection stays up for the next request.
const PERSIST: &str = "120s";

/// Key exchanges a confirmation prefers, in this order, among those ssh offers by default:
/// ML-KEM's hybrid (OpenSSH 9.9 and later; post-quantum, and fast), then X25519. OpenSSH 9.2's
/// default first choice, sntrup761's hybrid, costs the client about 85 ms of CPU per handshake
/// (docs/benchmarks.md, fleet), and a confirmation is a new handshake per changed host.
const CONFIRMATION_KEX: [&str; 2] = ["mlkem768x25519-sha256", "curve25519-sha256"];

/// How kapell reaches its peers.
#[derive(Debug, Clone)]
pub struct Ssh {
    user: Option<String>,
    config: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    control_dir: PathBuf,
    /// What `ssh -G` said of each address asked so far.
    resolved: Arc<Mutex<HashMap<String, Arc<Resolved>>>>,
    /// ssh's built-in `KexAlgorithms` (`ssh -G -F /dev/null`), read once when first needed.
    default_kex: Arc<OnceLock<Option<String>>>,
}

/// What ssh's configuration makes of an address (`ssh -G`); nothing is connected to.
#[derive(Debug, Default)]
struct Resolved {
    /// `HostName`, if it is an IP address.
    ip: Option<IpAddr>,
    /// `KexAlgorithms`, as configured for this address.
    kex: Option<String>,
}

/// Why a request did not get a reply.
#[derive(Debug)]
pub enum Failure {
    /// ssh could not connect or authenticate: nothing of the request reached the host.
    NotConnected(String),
    /// ssh failed after it connected, or said too little to tell (exit 255), with ssh's own
    /// words and kapell's reading: the request may have reached the host.
    Unreachable(String),
    /// The host key is unknown or changed: never accepted.
    HostKey(String),
    /// The peer ran something that did not answer with a reply (old or missing kapell, …).
    Peer(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotConnected(s) | Failure::Unreachable(s) | Failure::HostKey(s) | Failure::Peer(s) => {
                f.write_str(s)
            }
        }
    }
}

impl Ssh {
    /// With kapell's ControlMaster sockets under the runtime directory.
    pub fn new(defaults: &Defaults) -> Result<Ssh> {
        Ssh::with_control_dir(defaults, crate::lock::runtime_dir().join("ssh"))
    }

    /// With the ControlMaster sockets in `control_dir` (created, mode 0700).
    pub fn with_control_dir(defaults: &Defaults, control_dir: PathBuf) -> Result<Ssh> {
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
            resolved: Arc::default(),
            default_kex: Arc::default(),
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
            if let Some(kex) = self.confirmation_kex(address) {
                opt(&mut cmd, format!("KexAlgorithms={kex}"));
            }
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
    pub fn configured_ip(&self, address: &str) -> Option<IpAddr> {
        self.resolve(address).ip
    }

    /// The key exchanges a new connection to `address` offers, if kapell reorders them (see
    /// [`confirmation_kex`]); `None` leaves ssh's configuration alone.
    fn confirmation_kex(&self, address: &str) -> Option<String> {
        let configured = self.resolve(address).kex.clone()?;
        let default =
            self.default_kex.get_or_init(|| ssh_g(Command::new("ssh").args(["-F", "/dev/null"]), "kapell.invalid").kex);
        confirmation_kex(&configured, default.as_deref()?)
    }

    /// [`Resolved`] for `address`, from one `ssh -G` per address and run.
    fn resolve(&self, address: &str) -> Arc<Resolved> {
        if let Some(known) = self.resolved.lock().ok().and_then(|r| r.get(address).cloned()) {
            return known;
        }
        let mut cmd = Command::new("ssh");
        if let Some(config) = &self.config {
            cmd.arg("-F").arg(config);
        }
        // The user the connections log in as: `Match user` blocks may set what `-G` shows.
        if let Some(user) = &self.user {
            cmd.arg("-l").arg(user);
        }
        let resolved = Arc::new(ssh_g(&mut cmd, address));
        if let Ok(mut known) = self.resolved.lock() {
            known.insert(address.to_string(), resolved.clone());
        }
        resolved
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
        // Our own child, by PID.
        let kill = move || {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(bounded_output(child, MAX_REPLY_BYTES, kill));
        });
        let output = match rx.recv_timeout(deadline) {
            Ok(output) => output.map_err(|e| Failure::Unreachable(format!("ssh failed: {e}")))?,
            Err(_) => {
                kill();
                return Err(Failure::Unreachable(format!("no reply within {}s", deadline.as_secs())));
            }
        };
        let _ = writer.join();
        if output.stdout.len() > MAX_REPLY_BYTES {
            return Err(Failure::Peer(format!(
                "the reply of `{RECEIVE_COMMAND}` on {address} is larger than {} MiB: not read",
                MAX_REPLY_BYTES >> 20
            )));
        }
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

/// The largest reply read from a peer: a status with a set of 100,000 files and a large fleet's
/// catalog is tens of MiB. Past it the peer is not answering as kapell does, and reading on
/// would let it take the controller's memory, `parallel` hosts at once.
const MAX_REPLY_BYTES: usize = 256 << 20;

/// What ssh says on standard error that is kept (the last lines are shown).
const MAX_STDERR_BYTES: u64 = 64 << 10;

/// `child`'s exit status and output, as `wait_with_output` gives them, but bounded: standard
/// output up to one byte past `max` (then `kill` ends the child), standard error up to
/// [`MAX_STDERR_BYTES`] (the rest is read and dropped, so ssh never blocks on it).
fn bounded_output(
    mut child: std::process::Child,
    max: usize,
    kill: impl FnOnce(),
) -> std::io::Result<std::process::Output> {
    use std::io::Read as _;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut stderr).take(MAX_STDERR_BYTES).read_to_end(&mut kept);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        kept
    });
    let mut reply = Vec::new();
    (&mut stdout).take(max as u64 + 1).read_to_end(&mut reply)?;
    if reply.len() > max {
        kill();
    }
    drop(stdout);
    let status = child.wait()?;
    let stderr = errors.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout: reply, stderr })
}

/// `cmd -G -- address`: what ssh's configuration makes of `address`; empty if ssh fails.
fn ssh_g(cmd: &mut Command, address: &str) -> Resolved {
    let Ok(out) = cmd.arg("-G").arg("--").arg(address).stdin(Stdio::null()).stderr(Stdio::null()).output() else {
        return Resolved::default();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')).map(str::trim);
    Resolved {
        ip: value("hostname").and_then(|h| h.parse().ok()),
        kex: value("kexalgorithms").filter(|k| !k.is_empty()).map(str::to_string),
    }
}

/// The `KexAlgorithms` a confirmation's new connection offers: ssh's own default list with the
/// first of [`CONFIRMATION_KEX`] it contains moved to the front, or `None` (ssh decides, as for
/// every other connection) when the list configured for the host is not that default (the
/// operator, or a system-wide crypto policy, chose one: kapell never overrides it) or already
/// starts with it. Every algorithm the default offers is still offered, so a server that
/// accepts only some of them is still reached. A confirmation carries a set's hash one way and
/// hashes back, nothing secret, and the host is still authenticated by its key, so a key
/// exchange without post-quantum protection costs it nothing where only X25519 is fast.
fn confirmation_kex(configured: &str, default: &str) -> Option<String> {
    if configured != default {
        return None;
    }
    let offered: Vec<&str> = default.split(',').collect();
    let fastest = CONFIRMATION_KEX.iter().find(|k| offered.contains(k))?;
    if offered.first() == Some(fastest) {
        return None;
    }
    let rest = offered.iter().filter(|k| *k != fastest);
    Some(std::iter::once(fastest).chain(rest).copied().collect::<Vec<_>>().join(","))
}

/// What ssh says when it gave up before any session began: the connection, the key exchange or
/// the authentication failed, so no request was sent. (A session that ended later says
/// "Connection to … closed by remote host", a master that died "mux_client_…".)
const BEFORE_ANY_SESSION: &[&str] = &[
    "ssh: connect to host ",
    "Could not resolve hostname",
    "kex_exchange_identification:",
    "Connection closed by ",
    "Permission denied (",
];

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
    } else if BEFORE_ANY_SESSION.iter().any(|p| stderr.contains(p)) {
        Failure::NotConnected(format!("cannot reach {address} over ssh: {said}"))
    } else if said.is_empty() {
        // The connection ended with no word from ssh or the peer (a session killed mid-request).
        Failure::Unreachable(format!("cannot reach {address} over ssh: the connection ended without a reply"))
    } else {
        Failure::Unreachable(format!("cannot reach {address} over ssh: {said}"))
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that never stops talking (`yes`) is cut off past the limit rather than read into
    /// memory until the deadline; a normal reply is read whole, with its standard error.
    #[test]
    fn a_reply_is_read_up_to_its_limit() -> std::io::Result<()> {
        let spawn = |script: &str| {
            Command::new("sh").args(["-c", script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
        };
        let endless = spawn("exec yes")?;
        let pid = endless.id();
        let kill = move || {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL);
        };
        let out = bounded_output(endless, 4096, kill)?;
        assert_eq!(out.stdout.len(), 4097);
        assert!(!out.status.success());
        let fine = bounded_output(spawn("printf '{}'; echo oops >&2")?, 4096, || {})?;
        assert_eq!((fine.stdout.as_slice(), fine.stderr.as_slice()), (&b"{}"[..], &b"oops\n"[..]));
        Ok(())
    }

    const OPENSSH_9_2: &str = "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,\
                               ecdh-sha2-nistp256,diffie-hellman-group14-sha256";

    #[test]
    fn a_confirmation_moves_the_fastest_default_key_exchange_first_and_keeps_the_others() {
        assert_eq!(
            confirmation_kex(OPENSSH_9_2, OPENSSH_9_2).as_deref(),
            Some(
                "curve25519-sha256,sntrup761x25519-sha512@openssh.com,curve25519-sha256@libssh.org,\
                 ecdh-sha2-nistp256,diffie-hellman-group14-sha256"
            )
        );
        // OpenSSH 9.9: ML-KEM is offered but not first.
        let v9_9 = "sntrup761x25519-sha512,mlkem768x25519-sha256,curve25519-sha256";
        assert_eq!(
            confirmation_kex(v9_9, v9_9).as_deref(),
            Some("mlkem768x25519-sha256,sntrup761x25519-sha512,curve25519-sha256")
        );
        // OpenSSH 10: already first, so ssh decides.
        let v10 = "mlkem768x25519-sha256,sntrup761x25519-sha512,curve25519-sha256";
        assert_eq!(confirmation_kex(v10, v10), None);
    }

    #[test]
    fn a_key_exchange_the_operator_chose_is_never_overridden() {
        let chosen = "sntrup761x25519-sha512@openssh.com";
        assert_eq!(confirmation_kex(chosen, OPENSSH_9_2), None);
        // A policy that only reorders the default is a choice too.
        let reordered = "curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com,curve25519-sha256,\
                         ecdh-sha2-nistp256,diffie-hellman-group14-sha256";
        assert_eq!(confirmation_kex(reordered, OPENSSH_9_2), None);
        // A default without either fast exchange is left alone.
        assert_eq!(confirmation_kex("ecdh-sha2-nistp256", "ecdh-sha2-nistp256"), None);
    }

    /// With the system's own ssh: a config that leaves the key exchange alone gets the fast one
    /// first on a confirmation's connection only; one that sets `KexAlgorithms` keeps it.
    #[test]
    fn only_a_new_connection_to_a_host_left_at_the_default_reorders_key_exchanges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config");
        std::fs::write(&config, "Host chosen\n  KexAlgorithms curve25519-sha256@libssh.org\nHost *\n  User root\n")
            .expect("config");
        let ssh = Ssh {
            user: None,
            config: Some(config),
            known_hosts: None,
            control_dir: dir.path().to_path_buf(),
            resolved: Arc::default(),
            default_kex: Arc::default(),
        };
        let kex_of = |address: &str, fresh: bool| {
            let cmd = ssh.command(address, fresh);
            cmd.get_args().filter_map(|a| a.to_str()?.strip_prefix("KexAlgorithms=").map(str::to_string)).next()
        };
        let default = ssh_g(Command::new("ssh").args(["-F", "/dev/null"]), "kapell.invalid").kex.expect("ssh -G");
        let expected = confirmation_kex(&default, &default);
        assert_eq!(kex_of("10.0.0.1", true), expected, "ssh's default: {default}");
        if let Some(kex) = kex_of("10.0.0.1", true) {
            assert!(CONFIRMATION_KEX.iter().any(|k| kex.starts_with(k)), "{kex}");
        }
        assert_eq!(kex_of("10.0.0.1", false), None, "the master's connection keeps ssh's choice");
        assert_eq!(kex_of("chosen", true), None, "the operator's choice stays");

        // A choice made for the user the fleet logs in as (`user` in fleet.toml) stays too.
        std::fs::write(
            dir.path().join("config"),
            "Match user kapell
  KexAlgorithms curve25519-sha256@libssh.org
",
        )
        .expect("config");
        let as_kapell = Ssh { user: Some("kapell".into()), resolved: Arc::default(), ..ssh.clone() };
        let args = as_kapell.command("10.0.0.1", true);
        let kex = args.get_args().filter_map(|a| a.to_str()?.strip_prefix("KexAlgorithms=")).next();
        assert_eq!(kex, None, "`Match user kapell` chose the key exchange");
    }
}
