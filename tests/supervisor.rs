//! The container supervisor `kapell run` (see docs/architecture.md) in booted systemd hosts (nspawn) with a real,
//! private dockerd and a locally imported busybox image: dependencies and readiness, restarts,
//! stop, logs, secrets, failures, replicas, and every container setting reaching Docker.
//!
//! Each test boots its own host with its stacks in `/etc/kapell` (the generator renders them at
//! boot) and the dockerd's socket at `/var/run/docker.sock`. Stacks say `enable = false`, so
//! nothing starts until the test says so. The dockerd runs outside the host, so paths handed to
//! Docker (bind-mount sources, staged secrets) must mean the same file on both sides: a tmpfs
//! inside the dockerd's state directory is bind-mounted into the host at the same path
//! ([`Rig::shared`]), and the supervisor stages secrets there (`KAPELL_SECRETS_DIR`). Needs root and
//! the packages of .ci/deps; nothing is mocked or skipped, and everything is removed on failure.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use support::{ContainerRig as Rig, Entry, eventually};

// `MESSAGE_ID`s the supervisor logs, to find its events in the journal.
use kapell::logging::id::{
    CONTAINER_EXITED as EXITED, CONTAINER_READY as READY, CONTAINER_STARTED as STARTED, CONTAINER_STOPPED as STOPPED,
    CONTAINER_UNHEALTHY_RESTART as UNHEALTHY_RESTART,
};

const SEED: &str = r#"
enable = false

[services.server]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www"]
stop_timeout = "1s"
health = { cmd = ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"], interval = "500ms", retries = 3 }

[services.proxy]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "echo proxy up; exec sleep 100000"]
requires = ["server"]
stop_timeout = "1s"
"#;

/// The seed scenario: starting only the proxy brings the server up first (its health check
/// passed: it is serving), then the proxy.
#[test]
fn starting_the_proxy_brings_the_server_up_first() -> Result<()> {
    let rig = Rig::boot(&[("seed", SEED)], |b| b)?;
    rig.systemctl(&["start", "seed-proxy.service"])?;
    for unit in ["seed-server.service", "seed-proxy.service"] {
        ensure!(rig.prop(unit, "ActiveState")? == "active", "{unit} is not active after the start job");
    }
    let server_ready = rig.mono("seed-server.service", "ActiveEnterTimestampMonotonic")?;
    let proxy_started = rig.mono("seed-proxy.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(
        server_ready > 0 && proxy_started >= server_ready,
        "proxy started at {proxy_started} µs, before the server was ready at {server_ready} µs"
    );

    ensure!(rig.containers("io.kapell.stack=seed")? == ["kapell-seed-proxy", "kapell-seed-server"]);
    let server_at = rig.inspect("kapell-seed-server", "{{.State.StartedAt}}")?;
    let proxy_at = rig.inspect("kapell-seed-proxy", "{{.State.StartedAt}}")?;
    // RFC 3339 with nanoseconds in UTC: the strings sort like the times.
    ensure!(server_at < proxy_at, "server container started {server_at}, proxy {proxy_at}");
    ensure!(rig.prop("seed-server.service", "StatusText")? == "running, health: healthy");
    ensure!(rig.prop("seed-proxy.service", "StatusText")? == "running");
    // Docker runs the `cmd` check; `kapell status` shows the probe behind its state all the same.
    let out = rig.host.exec_ok(&["kapell", "status", "--json", "seed"])?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).with_context(|| out.clone())?;
    let server = rows.iter().find(|r| r["unit"] == "seed-server.service").with_context(|| out.clone())?;
    let probe = &server["last_probe"];
    ensure!(
        server["health"] == "healthy"
            && probe["result"]["exit_status"] == 0
            && probe["passed"] == true
            && probe["at_usec"].as_u64().is_some_and(|t| t > 0)
            && probe["duration_usec"].is_u64(),
        "{server}"
    );
    eventually("the proxy's output in its journal", Duration::from_secs(10), || {
        Ok(rig.journal("seed-proxy.service")?.iter().any(|e| e.message == "proxy up"))
    })
}

const SLOW: &str = r#"
enable = false

[services.slow]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "sleep 3; touch /tmp/ready; exec sleep 100000"]
stop_timeout = "1s"
health = { cmd = ["test", "-e", "/tmp/ready"], interval = "300ms", retries = 100 }

[services.app]
image = "kapell-test/busybox:1"
command = ["sleep", "100000"]
requires = ["slow"]
stop_timeout = "1s"
"#;

/// Readiness: a service whose health check passes only after ~3 s holds its dependent back
/// until then.
#[test]
fn a_dependent_waits_until_the_health_check_passes() -> Result<()> {
    let rig = Rig::boot(&[("slow", SLOW)], |b| b)?;
    rig.systemctl(&["start", "slow-app.service"])?;
    let slow_started = rig.mono("slow-slow.service", "ExecMainStartTimestampMonotonic")?;
    let slow_ready = rig.mono("slow-slow.service", "ActiveEnterTimestampMonotonic")?;
    let app_started = rig.mono("slow-app.service", "ExecMainStartTimestampMonotonic")?;
    let waited = Duration::from_micros(slow_ready.saturating_sub(slow_started));
    ensure!(
        waited >= Duration::from_millis(2900),
        "slow was ready after {waited:?}, before its health check could pass"
    );
    ensure!(app_started >= slow_ready, "app started at {app_started} µs, slow ready at {slow_ready} µs");

    // The same order in the journal: slow's readiness, then app's container start (both reach
    // the journal on journald's time, possibly after `systemctl start` returned).
    let (mut slow, mut app) = (Vec::new(), Vec::new());
    let logged = eventually("slow's readiness and app's start in the journal", Duration::from_secs(10), || {
        (slow, app) = (rig.journal("slow-slow.service")?, rig.journal("slow-app.service")?);
        Ok(Entry::find(&slow, READY, 0).is_some() && Entry::find(&app, STARTED, 0).is_some())
    });
    logged.with_context(|| format!("slow:\n{}\napp:\n{}", Entry::lines(&slow), Entry::lines(&app)))?;
    let ready = Entry::find(&slow, READY, 0).context("no readiness")?;
    let started = Entry::find(&app, STARTED, 0).context("no start")?;
    ensure!(ready < started, "journal: slow ready at {ready} µs, app's container started at {started} µs");
    eprintln!(
        "timing: slow ready {waited:?} after its start; app started {} ms later",
        (app_started - slow_ready) / 1000
    );
    Ok(())
}

const FLAKY: &str = r#"
enable = false

[services.flaky]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "echo flaky run; sleep 1; exit 1"]
restart = "on-failure"
restart_delay = "2s"
"#;

/// A container that exits 1 makes the unit exit 1, and systemd restarts it after `restart_delay`.
#[test]
fn a_container_that_exits_1_is_restarted_after_restart_delay() -> Result<()> {
    let rig = Rig::boot(&[("flaky", FLAKY)], |b| b)?;
    let unit = "flaky-flaky.service";
    rig.systemctl(&["start", unit])?;
    eventually("a restart", Duration::from_secs(30), || Ok(rig.prop(unit, "NRestarts")?.parse::<u32>()? >= 1))?;
    let mut entries = Vec::new();
    // The second run's output travels Docker's log stream to the journal after the supervisor's
    // "started" line, so both are waited for, not the first alone.
    eventually("the second run and its output in the journal", Duration::from_secs(10), || {
        entries = rig.journal(unit)?;
        let starts = entries.iter().filter(|e| e.message_id == STARTED).count();
        let runs = entries.iter().filter(|e| e.message == "flaky run").count();
        Ok(starts >= 2 && runs >= 2)
    })?;
    let exited = Entry::find(&entries, EXITED, 0).with_context(|| Entry::lines(&entries))?;
    let exit_line = entries.iter().find(|e| e.message_id == EXITED).map(|e| e.message.as_str()).unwrap_or_default();
    ensure!(exit_line.ends_with("exited with status 1"), "{exit_line}");
    ensure!(
        entries.iter().any(|e| e.identifier == "systemd" && e.message.contains("status=1/FAILURE")),
        "systemd did not see exit status 1:\n{}",
        Entry::lines(&entries)
    );
    let again = Entry::find(&entries, STARTED, exited).with_context(|| Entry::lines(&entries))?;
    let gap = Duration::from_micros(again - exited);
    ensure!(gap >= Duration::from_secs(2), "restarted {gap:?} after the exit, before restart_delay (2s)");
    ensure!(gap < Duration::from_secs(15), "restart took {gap:?}");
    eprintln!("timing: exit to next container start {gap:?} (restart_delay 2s)");
    Ok(())
}

const SICK: &str = r#"
enable = false

[services.sick]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "touch /tmp/ok; sleep 8; rm /tmp/ok; exec sleep 100000"]
health = { cmd = ["test", "-e", "/tmp/ok"], interval = "300ms", retries = 2 }
restart_delay = "500ms"
stop_timeout = "1s"
"#;

/// A container that turns unhealthy after being healthy is stopped and the service restarted.
#[test]
fn a_container_that_turns_unhealthy_is_restarted() -> Result<()> {
    let rig = Rig::boot(&[("sick", SICK)], |b| b)?;
    let unit = "sick-sick.service";
    rig.systemctl(&["start", unit])?;
    ensure!(rig.prop(unit, "StatusText")? == "running, health: healthy");
    eventually("a restart", Duration::from_secs(30), || Ok(rig.prop(unit, "NRestarts")?.parse::<u32>()? >= 1))?;
    let mut entries = Vec::new();
    eventually("systemd's view of the exit in the journal", Duration::from_secs(10), || {
        entries = rig.journal(unit)?;
        Ok(entries.iter().any(|e| e.identifier == "systemd" && e.message.contains("status=3")))
    })
    .with_context(|| Entry::lines(&entries))?;
    let unhealthy = Entry::find(&entries, UNHEALTHY_RESTART, 0)
        .with_context(|| format!("no unhealthy restart in the journal:\n{}", Entry::lines(&entries)))?;
    // The change is logged with the probe behind it, from Docker's health log.
    ensure!(
        entries.iter().any(|e| e.message.starts_with("sick-sick.service: container is unhealthy: health check ")
            && e.message.ends_with("times in a row (last: exit status 1)")),
        "no reason with the unhealthy state:\n{}",
        Entry::lines(&entries)
    );
    ensure!(
        entries.iter().any(|e| e.mono > unhealthy && e.identifier == "systemd" && e.message.contains("status=3")),
        "the supervisor should exit non-zero after stopping the unhealthy container:\n{}",
        Entry::lines(&entries)
    );
    // The new container becomes healthy again and the unit active.
    rig.wait_active(unit, Duration::from_secs(20))?;
    eventually("the restarted service ready", Duration::from_secs(20), || {
        Ok(Entry::find(&rig.journal(unit)?, READY, unhealthy).is_some())
    })?;
    ensure!(rig.containers("io.kapell.unit=sick-sick.service")? == ["kapell-sick-sick"]);
    Ok(())
}

const STOPPABLE: &str = r#"
enable = false

[services.polite]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo hello from the container; echo to stderr >&2; while :; do sleep 1; done"]
stop_timeout = "10s"

[services.stubborn]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "trap '' TERM; echo ignoring TERM; while :; do sleep 1; done"]
stop_timeout = "2s"
"#;

/// `systemctl stop` stops the container within the grace period, removes it and leaves the unit
/// inactive (not failed); the container's stdout and stderr are in `journalctl -u`.
#[test]
fn stop_removes_the_container_and_output_reaches_the_journal() -> Result<()> {
    let rig = Rig::boot(&[("stop", STOPPABLE)], |b| b)?;
    let units = ["stop-polite.service", "stop-stubborn.service"];
    rig.systemctl(&["start", units[0], units[1]])?;
    ensure!(rig.containers("io.kapell.stack=stop")? == ["kapell-stop-polite", "kapell-stop-stubborn"]);
    eventually("container output in the journal", Duration::from_secs(10), || {
        let text = rig.host.journal(units[0])?;
        Ok(text.contains("hello from the container") && text.contains("to stderr"))
    })?;

    let begun = Instant::now();
    rig.systemctl(&["stop", units[0]])?;
    let polite = begun.elapsed();
    let begun = Instant::now();
    rig.systemctl(&["stop", units[1]])?;
    let stubborn = begun.elapsed();
    for unit in units {
        let (state, result) = (rig.prop(unit, "ActiveState")?, rig.prop(unit, "Result")?);
        ensure!(state == "inactive" && result == "success", "{unit}: {state} ({result})\n{}", rig.host.journal(unit)?);
    }
    ensure!(rig.containers("io.kapell.stack=stop")?.is_empty(), "containers left behind");
    // Under its 10 s grace period: it was not waited out.
    ensure!(polite < Duration::from_secs(8), "a container that exits on SIGTERM took {polite:?} to stop");
    ensure!(stubborn >= Duration::from_secs(2), "the grace period was cut short: {stubborn:?}");
    ensure!(stubborn < Duration::from_secs(15), "stop took {stubborn:?} with a 2s grace period");

    // journald reads what the supervisor wrote on its own time, possibly after the unit stopped.
    let mut journal = Vec::new();
    let settled = eventually("the output after SIGTERM and the stop in the journal", Duration::from_secs(10), || {
        journal = rig.journal(units[0])?;
        Ok(journal.iter().any(|e| e.message == "got TERM") && Entry::find(&journal, STOPPED, 0).is_some())
    });
    settled.with_context(|| format!("output after SIGTERM was lost, or no stop line:\n{}", Entry::lines(&journal)))?;
    eprintln!("timing: stop {polite:?} (exits on TERM), {stubborn:?} (ignores TERM, 2s grace)");
    Ok(())
}

const KILLABLE: &str = r#"
enable = false

[services.victim]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "exec sleep 100000"]
restart = "no"
stop_timeout = "1s"
"#;

/// A supervisor killed with SIGKILL cannot stop its container, which lives in Docker's cgroup,
/// out of the unit's reach: the unit's `ExecStopPost=` removes it.
#[test]
fn a_killed_supervisor_leaves_no_container_behind() -> Result<()> {
    let rig = Rig::boot(&[("kill", KILLABLE)], |b| b)?;
    let unit = "kill-victim.service";
    rig.systemctl(&["start", unit])?;
    ensure!(rig.containers("io.kapell.stack=kill")? == ["kapell-kill-victim"]);
    rig.systemctl(&["kill", "--signal=KILL", unit])?;
    eventually("the unit stopped", Duration::from_secs(20), || Ok(rig.prop(unit, "ActiveState")? != "active"))?;
    eventually("the container removed", Duration::from_secs(20), || {
        Ok(rig.containers("io.kapell.stack=kill")?.is_empty())
    })?;
    eventually("the clean-up in the unit's journal", Duration::from_secs(10), || {
        Ok(rig.host.journal(unit)?.contains("which its supervisor left behind"))
    })?;
    Ok(())
}

const SECRET_VALUE: &str = "kt-s3cr3t-7f1c9a";

const VAULT: &str = r#"
enable = false

[services.reader]
image = "kapell-test/busybox:1"
user = "1000:1000"
secrets = ["token"]
stop_timeout = "1s"
command = ["sh", "-c", "sha256sum /run/secrets/token; stat -c 'mode %a uid %u' /run/secrets/token; echo x 2>/dev/null > /run/secrets/token || echo read-only; exec sleep 100000"]

[secrets.token]
file = "/etc/kapell/secrets/token"
"#;

/// Secrets reach the container as read-only files its user can read, and their value appears in
/// no unit file, no command line, no journal entry and no container setting.
#[test]
fn secrets_reach_the_container_and_nothing_else() -> Result<()> {
    let rig = Rig::boot(&[("vault", VAULT)], |b| b.install_file("/etc/kapell/secrets/token", SECRET_VALUE, 0o600))?;
    let unit = "vault-reader.service";
    rig.systemctl(&["start", unit])?;
    let digest = rig.host.exec_ok(&["sha256sum", "/etc/kapell/secrets/token"])?;
    let digest = digest.split_whitespace().next().context("no digest")?.to_string();
    eventually("the container's report", Duration::from_secs(10), || {
        let text = rig.host.journal(unit)?;
        Ok(text.contains("read-only"))
    })?;
    let report = rig.host.journal(unit)?;
    ensure!(report.contains(&format!("{digest}  /run/secrets/token")), "wrong secret content:\n{report}");
    ensure!(report.contains("mode 400 uid 1000"), "the container user cannot own its secret:\n{report}");

    // Nowhere else: unit files, command lines in the host and on the machine, the whole journal,
    // Docker's view of the container.
    let grep = |what: &str, text: &str| -> Result<()> {
        ensure!(!text.contains(SECRET_VALUE), "the secret value appears in {what}");
        Ok(())
    };
    grep(
        "unit files",
        &rig.host.exec_ok(&[
            "sh",
            "-c",
            "cat /run/systemd/generator/* /etc/systemd/system/*.service 2>/dev/null; true",
        ])?,
    )?;
    grep("the host's command lines", &rig.host.exec_ok(&["ps", "-eo", "args"])?)?;
    let machine_ps = support::run_ok(Command::new("ps").args(["-eo", "args"]))?;
    grep("the machine's command lines", &String::from_utf8_lossy(&machine_ps.stdout))?;
    grep("the journal", &rig.host.exec_ok(&["journalctl", "-o", "export", "--no-pager"])?)?;
    grep("docker inspect", &rig.dockerd()?.docker_ok(&["inspect", "kapell-vault-reader"])?)?;

    // The staged copy lives only while the service runs.
    let staged = rig.shared().join("secrets/kapell-vault-reader");
    ensure!(staged.join("token").exists(), "no staged secret in {}", staged.display());
    rig.systemctl(&["stop", unit])?;
    ensure!(!staged.exists(), "staged secrets left in {}", staged.display());
    Ok(())
}

const BROKEN: &str = r#"
enable = false

[services.never]
image = "kapell-test/absent:1"
pull = "never"
restart = "no"

[services.fine]
image = "kapell-test/busybox:1"
command = ["sleep", "100000"]
restart = "no"
"#;

/// Failures are one clear journal line naming the unit, what failed and why, and the unit fails:
/// a missing image with `pull = "never"`, then Docker stopped.
#[test]
fn failures_are_one_clear_journal_line() -> Result<()> {
    let mut rig = Rig::boot(&[("broken", BROKEN)], |b| b)?;
    expect_one_line(&rig, "broken-never.service", "image kapell-test/absent:1 is not present and pull = \"never\"")?;

    rig.dockerd.take(); // stops Docker (and removes its containers and state)
    expect_one_line(&rig, "broken-fine.service", "Docker is not reachable at unix:///var/run/docker.sock")
}

/// Starting `unit` fails, the unit is `failed`, and kapell wrote exactly one warning or error line
/// to its journal: an error naming the unit and containing `cause`. (Informational events before
/// the failure, such as the stack network being created, are not complaints.)
fn expect_one_line(rig: &Rig, unit: &str, cause: &str) -> Result<()> {
    let start = rig.host.systemctl(&["start", unit])?;
    ensure!(!start.status.success(), "starting {unit} should fail");
    ensure!(rig.prop(unit, "ActiveState")? == "failed", "{unit} should be failed");
    let mut ours = Vec::new();
    eventually("the supervisor's error in the journal", Duration::from_secs(30), || {
        ours =
            rig.supervisor_journal(unit)?.into_iter().filter(|e| e.identifier == "kapell" && e.priority <= 4).collect();
        Ok(!ours.is_empty())
    })?;
    // The unit failed after its clean-up ran, so whatever else kapell had to say was sent; a
    // second later it has reached the journal too.
    std::thread::sleep(Duration::from_secs(1));
    let ours: Vec<Entry> =
        rig.supervisor_journal(unit)?.into_iter().filter(|e| e.identifier == "kapell" && e.priority <= 4).collect();
    ensure!(ours.len() == 1, "expected one warning or error line from kapell:\n{}", Entry::lines(&ours));
    let line = &ours[0];
    ensure!(line.priority == 3, "not logged as an error: {line:?}");
    ensure!(
        line.message.starts_with(&format!("{unit}: ")) && line.message.contains(cause),
        "unclear: {:?}",
        line.message
    );
    eprintln!("journal: {}", line.message);
    Ok(())
}

const REPLICAS: &str = r#"
enable = false

[services.api]
image = "kapell-test/busybox:1"
command = ["sleep", "100000"]
replicas = 3
stop_timeout = "1s"
"#;

/// A replicated container service runs one container per instance, named and labelled as kapell.toml(5) says.
#[test]
fn replicas_run_one_named_container_each() -> Result<()> {
    let rig = Rig::boot(&[("rep", REPLICAS)], |b| b)?;
    rig.systemctl(&["start", "rep.target"])?;
    for i in 1..=3 {
        rig.wait_active(&format!("rep-api@{i}.service"), Duration::from_secs(20))?;
    }
    ensure!(rig.containers("io.kapell.service=api")? == ["kapell-rep-api-1", "kapell-rep-api-2", "kapell-rep-api-3"]);
    for i in 1..=3 {
        let name = format!("kapell-rep-api-{i}");
        let labels = rig.inspect(
            &name,
            r#"{{index .Config.Labels "io.kapell.unit"}} {{index .Config.Labels "io.kapell.instance"}}"#,
        )?;
        ensure!(labels == format!("rep-api@{i}.service {i}"), "{name}: {labels}");
    }
    rig.systemctl(&["stop", "rep.target"])?;
    eventually("the replicas gone", Duration::from_secs(20), || Ok(rig.containers("io.kapell.stack=rep")?.is_empty()))
}

/// Every container setting of the stack file reaches Docker: entrypoint and command, env (over
/// env files), volumes (a host path, read-only, and a named volume), user, ports, network,
/// limits, health check, labels and Docker's restart policy `no`.
#[test]
fn container_settings_reach_docker() -> Result<()> {
    // The bind source must be the same path for the host and the dockerd: the shared tmpfs.
    let probe = |shared: &Path| {
        format!(
            r#"
enable = false

[services.probe]
image = "kapell-test/busybox:1"
entrypoint = ["/bin/sh", "-c"]
command = ["echo \"A=$A B=$B C=$C\"; id -u; cat /data/greeting; touch /data/x 2>/dev/null || echo data read-only; grep -q ' /named ' /proc/mounts && echo named mounted; exec sleep 100000"]
env = {{ A = "explicit", B = "explicit" }}
env_files = ["/etc/kapell/probe.env"]
volumes = ["{}/data:/data:ro", "kt-named:/named"]
ports = ["127.0.0.1:18080:80/tcp"]
user = "1000:1000"
memory_max = "64M"
cpus = 0.5
pids_max = 64
stop_timeout = "2s"
health = {{ cmd = ["true"], interval = "1s" }}
"#,
            shared.display()
        )
    };
    // The shared directory only exists once the dockerd does, so the stack is written after boot.
    let rig = Rig::boot(&[], |b| b.install_file("/etc/kapell/probe.env", "B=from-file\nC=\"from file\"\n", 0o600))?;
    std::fs::create_dir_all(rig.shared().join("data"))?;
    std::fs::write(rig.shared().join("data/greeting"), "hello from the host\n")?;
    std::fs::write(rig.host.root().join("etc/kapell/probe.toml"), probe(rig.shared()))?;
    rig.systemctl(&["daemon-reload"])?;
    let unit = "probe-probe.service";
    rig.systemctl(&["start", unit])?;

    eventually("the probe's report", Duration::from_secs(10), || Ok(rig.host.journal(unit)?.contains("named mounted")))
        .with_context(|| rig.host.journal(unit).unwrap_or_default())?;
    let report = rig.journal(unit)?;
    for expected in
        ["A=explicit B=explicit C=from file", "1000", "hello from the host", "data read-only", "named mounted"]
    {
        ensure!(report.iter().any(|e| e.message == expected), "missing {expected:?} in:\n{}", Entry::lines(&report));
    }
    let name = "kapell-probe-probe";
    let checks = [
        ("{{json .Config.Entrypoint}}", r#"["/bin/sh","-c"]"#.to_string()),
        ("{{.Config.User}}", "1000:1000".into()),
        ("{{.Config.StopTimeout}}", "2".into()),
        ("{{json .Config.Healthcheck.Test}}", r#"["CMD","true"]"#.into()),
        ("{{.Config.Healthcheck.Interval}}", "1s".into()),
        ("{{.HostConfig.RestartPolicy.Name}}", "no".into()),
        ("{{.HostConfig.NetworkMode}}", "kapell-probe".into()),
        ("{{.HostConfig.Memory}}", (64u64 << 20).to_string()),
        ("{{.HostConfig.NanoCpus}}", "500000000".into()),
        ("{{.HostConfig.PidsLimit}}", "64".into()),
        ("{{.HostConfig.LogConfig.Type}}", "none".into()),
        ("{{json .HostConfig.PortBindings}}", r#"{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18080"}]}"#.into()),
        (
            r#"{{index .Config.Labels "io.kapell.stack"}}/{{index .Config.Labels "io.kapell.service"}}/{{index .Config.Labels "io.kapell.unit"}}"#,
            "probe/probe/probe-probe.service".into(),
        ),
        (
            r#"{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}}:{{.Destination}}{{end}}{{end}}"#,
            "kt-named:/named".into(),
        ),
    ];
    for (format, expected) in checks {
        let got = rig.inspect(name, format)?;
        ensure!(got == expected, "docker inspect {format}: {got:?}, expected {expected:?}");
    }
    // The stack network's names (Docker adds the container's short id to the list).
    let aliases = rig.inspect(name, r#"{{json (index .NetworkSettings.Networks "kapell-probe").Aliases}}"#)?;
    ensure!(aliases.starts_with(r#"["probe","probe.probe""#), "aliases on kapell-probe: {aliases}");
    let env = rig.inspect(name, "{{json .Config.Env}}")?;
    ensure!(
        env.contains(r#""A=explicit""#) && env.contains(r#""B=explicit""#) && env.contains(r#""C=from file""#),
        "{env}"
    );
    rig.systemctl(&["stop", unit])?;
    ensure!(rig.containers("io.kapell.stack=probe")?.is_empty(), "container left behind");
    Ok(())
}
