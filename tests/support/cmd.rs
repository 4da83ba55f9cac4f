//! Running helper programs and signalling processes by PID.
//!
//! The crate denies `unsafe_code`, so signals go through `kill(1)` rather than libc.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `program arg…` as a shell-ish string for error messages; arguments that need it are quoted.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c);
            if !a.is_empty() && a.chars().all(plain) {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion with stdin closed and output captured. Fails only if it cannot be
/// started: callers that care about the exit status use [`run_ok`].
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Like [`run`], but a non-zero exit is an error that carries the status, stdout and stderr.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = run(cmd)?;
    if !out.status.success() {
        bail!("`{}` failed: {}", describe(cmd), render(&out));
    }
    Ok(out)
}

/// Exit status plus both output streams, for error messages.
pub fn render(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Sends `signal` (a name such as `TERM`) to `pid`; false if the process is already gone.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` exists and is not a zombie. For processes that are not our children (those we
/// wait on through their `Child`).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the parenthesised command name, which may contain spaces.
    match stat.rsplit_once(") ") {
        Some((_, rest)) => !rest.starts_with('Z'),
        None => false,
    }
}

/// Parent PID of `pid`, from `/proc/<pid>/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// Polls `done` every 50 ms until it returns true or `timeout` passes.
pub fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    eventually("", timeout, || Ok(done())).is_ok()
}

/// Polls `check` every 50 ms until it says true; after `timeout`, fails with "timed out after
/// … waiting for {what}". An error from `check` (a unit that failed, say) ends the wait at once.
/// The one way the tests wait for something asynchronous (journald, systemd jobs, networking,
/// a daemon's pass).
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(50));
    }
}

/// Stops a child we spawned: SIGTERM, wait up to `grace`, then SIGKILL and wait. Returns false if
/// it needed the SIGKILL. Never blocks forever on a process that ignores signals it can catch.
pub fn terminate(child: &mut Child, grace: Duration) -> bool {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    signal(child.id(), "TERM");
    if poll(grace, || !matches!(child.try_wait(), Ok(None))) {
        return true;
    }
    // Errors here mean the child is already gone; nothing more to do.
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Where a long-running child's stdout and stderr go: one file, truncated.
pub fn log_to(path: &Path) -> Result<(Stdio, Stdio)> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create log {}", path.display()))?;
    let err = file.try_clone().with_context(|| format!("cannot reopen log {}", path.display()))?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

/// What a command did: its exit status, both output streams and how long it took. Displayed
/// in full, so a failed expectation shows everything the command said.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    pub fn from(out: Output, took: Duration) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        }
    }

    /// Lines of stdout that start with `verb` (the apply report: `started   unit   (why)`).
    pub fn units(&self, verb: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(verb)?.strip_prefix(' ')?.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Runs `cmd` (stdin closed) and times it.
    pub fn of(cmd: &mut Command) -> Result<Run> {
        let start = Instant::now();
        let out = run(cmd)?;
        Ok(Run::from(out, start.elapsed()))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} in {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}
