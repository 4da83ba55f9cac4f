//! One probe: an HTTP GET, a TCP connect or a command, bounded by the check's timeout.
//!
//! HTTP and TCP are probed from the host with one short connection each (hyper's HTTP/1 client,
//! no body read beyond what hyper needs for the status line and headers), so nothing is needed
//! inside an image. A native service's `cmd` runs on the host as the service's user. What a probe
//! costs is measured by `benches/health.rs`.

use crate::model::Check;
use http_body_util::Empty;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The result of one probe, as `kapell status --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An HTTP check got a response with this status code.
    Status(u16),
    /// A TCP check's connection opened.
    Connected,
    /// A command check exited with this status.
    ExitStatus(i32),
    /// No answer: what went wrong (`connection refused`, `timed out after 2s`, …).
    Error(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(code) => write!(f, "status {code}"),
            Outcome::Connected => f.write_str("connected"),
            Outcome::ExitStatus(code) => write!(f, "exit status {code}"),
            Outcome::Error(e) => f.write_str(e),
        }
    }
}

/// One probe's time, duration and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// When it started, µs since the epoch.
    pub at_usec: u64,
    pub duration_usec: u64,
    pub passed: bool,
    pub outcome: Outcome,
}

/// Where and how to probe: the address of the service (`None` only for command checks) and the
/// user a host-side command runs as.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub check: &'a Check,
    pub address: Option<IpAddr>,
    pub timeout: Duration,
    pub user: Option<&'a str>,
}

/// Probes once. Never fails: a failure is a probe whose outcome says why.
pub async fn probe(target: &Target<'_>) -> Probe {
    let at_usec = now_usec();
    let started = Instant::now();
    let outcome = match tokio::time::timeout(target.timeout, run(target)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Error(format!(
            "timed out after {}",
            crate::quantity::Duration(u64::try_from(target.timeout.as_micros()).unwrap_or(u64::MAX))
        )),
    };
    let passed = match (&outcome, target.check) {
        (Outcome::Status(code), Check::Http { expect, .. }) => expect.contains(*code),
        (Outcome::Connected, Check::Tcp { .. }) => true,
        (Outcome::ExitStatus(code), Check::Cmd(_)) => *code == 0,
        _ => false,
    };
    let duration_usec = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    Probe { at_usec, duration_usec, passed, outcome }
}

async fn run(target: &Target<'_>) -> Outcome {
    let address = target.address.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let result = match target.check {
        Check::Http { port, path, .. } => http(SocketAddr::new(address, *port), path).await,
        Check::Tcp { port } => connect(SocketAddr::new(address, *port)).await.map(|_| Outcome::Connected),
        Check::Cmd(cmd) => command(cmd, target.user).await,
    };
    result.unwrap_or_else(Outcome::Error)
}

async fn connect(address: SocketAddr) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect(address).await.map_err(|e| format!("cannot connect to {address}: {}", plain(&e)))?;
    // The request goes out in one segment; no waiting for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// `GET path` with `Connection: close`; the status code of the response.
async fn http(address: SocketAddr, path: &str) -> Result<Outcome, String> {
    let stream = connect(address).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<&'static [u8]>>(io)
        .await
        .map_err(|e| format!("HTTP to {address}: {e}"))?;
    let host = match address {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => a.to_string(),
    };
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "kapell-probe")
        .header(http::header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| format!("invalid request for {path:?}: {e}"))?;
    // The connection is driven alongside the request; dropping both closes the socket. With
    // `Connection: close` it may finish first, its response already handed to the request.
    let send = sender.send_request(request);
    tokio::pin!(send, connection);
    let response = tokio::select! {
        response = &mut send => response,
        done = &mut connection => match done {
            Ok(()) => send.await,
            Err(e) => return Err(format!("HTTP to {address}: {e}")),
        },
    };
    let response = response.map_err(|e| format!("HTTP to {address}: {e}"))?;
    Ok(Outcome::Status(response.status().as_u16()))
}

/// Runs a command check on the host, as `user` when given; killed if the probe times out.
async fn command(cmd: &[String], user: Option<&str>) -> Result<Outcome, String> {
    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(user) = user {
        let Credentials { uid, gid, groups } = credentials(user)?;
        // Only when it changes anything: an unprivileged prober (a test, a user unit) cannot.
        if nix::unistd::geteuid().as_raw() != uid || nix::unistd::getegid().as_raw() != gid {
            // As systemd's `User=` does: the user's supplementary groups too (std's `uid()`
            // would drop them all), set in the child before it becomes the user. Only system
            // calls there, with what was looked up before the fork.
            let (uid, gid) = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(gid));
            // SAFETY: the closure makes async-signal-safe system calls only and allocates nothing.
            // The one `unsafe` of kapell: std has no stable way to set supplementary groups.
            #[allow(unsafe_code)]
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::setgroups(&groups)?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
    }
    let status = command.status().await.map_err(|e| format!("cannot run {}: {}", cmd[0], plain(&e)))?;
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(Outcome::ExitStatus(code)),
        (None, Some(signal)) => Err(format!("{} was killed by signal {signal}", cmd[0])),
        (None, None) => Err(format!("{} ended without a status", cmd[0])),
    }
}

/// Whom a command check runs as.
struct Credentials {
    uid: u32,
    gid: u32,
    /// The user's supplementary groups (with `gid`), as the system's group database says.
    groups: Vec<nix::unistd::Gid>,
}

/// `user` or `user:group` (names or numbers) as uid, gid and supplementary groups; the group
/// defaults to the user's.
fn credentials(spec: &str) -> Result<Credentials, String> {
    use nix::unistd::{Group, User};
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(uid.into()),
        Err(_) => User::from_name(user),
    };
    let found = found.map_err(|e| format!("cannot look up user {user}: {e}"))?;
    let (uid, primary, name) = match (found, user.parse::<u32>()) {
        (Some(u), _) => (u.uid.as_raw(), Some(u.gid.as_raw()), Some(u.name)),
        (None, Ok(uid)) => (uid, None, None),
        (None, Err(_)) => return Err(format!("there is no user {user}")),
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => Group::from_name(g)
                .map_err(|e| format!("cannot look up group {g}: {e}"))?
                .ok_or_else(|| format!("there is no group {g}"))?
                .gid
                .as_raw(),
        },
    };
    // A uid without a name in the user database has no groups but its own.
    let groups = match name.and_then(|n| std::ffi::CString::new(n).ok()) {
        Some(name) => nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
            .map_err(|e| format!("cannot look up the groups of {user}: {e}"))?,
        None => vec![nix::unistd::Gid::from_raw(gid)],
    };
    Ok(Credentials { uid, gid, groups })
}

/// An I/O error as the sentence an operator knows (`connection refused`), without Rust's
/// `(os error 111)` suffix.
fn plain(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// µs since the epoch.
pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusRange;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    /// A one-shot HTTP server on loopback answering `status`.
    async fn answer(status: u16) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        port
    }

    #[test]
    fn http_status_decides() {
        runtime().block_on(async {
            for (status, passed) in [(200, true), (302, true), (500, false)] {
                let port = answer(status).await;
                let check = Check::Http { port, path: "/healthz".into(), expect: StatusRange::DEFAULT };
                let target = Target { check: &check, address: None, timeout: Duration::from_secs(2), user: None };
                let probe = probe(&target).await;
                assert_eq!((probe.outcome, probe.passed), (Outcome::Status(status), passed));
            }
        });
    }

    #[test]
    fn tcp_refused_and_open() {
        runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let check = Check::Tcp { port };
            let target = Target { check: &check, address: None, timeout: Duration::from_secs(2), user: None };
            assert!(probe(&target).await.passed);
            drop(listener);
            let failed = probe(&target).await;
            assert!(!failed.passed);
            assert!(matches!(&failed.outcome, Outcome::Error(e) if e.contains("connection refused")), "{failed:?}");
        });
    }

    #[test]
    fn command_exit_status_and_timeout() {
        runtime().block_on(async {
            let ok = Check::Cmd(vec!["/bin/true".into()]);
            let t = Target { check: &ok, address: None, timeout: Duration::from_secs(2), user: None };
            assert_eq!(probe(&t).await.outcome, Outcome::ExitStatus(0));
            let slow = Check::Cmd(vec!["/bin/sleep".into(), "5".into()]);
            let t = Target { check: &slow, address: None, timeout: Duration::from_millis(200), user: None };
            let p = probe(&t).await;
            assert!(!p.passed && matches!(&p.outcome, Outcome::Error(e) if e.starts_with("timed out")), "{p:?}");
        });
    }
}
