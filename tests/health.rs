//! Health checks of native services on booted systemd hosts (nspawn): readiness (a `requires`
//! dependent starts only after the first passing probe, HTTP and TCP), liveness (the host's
//! prober has systemd restart an unhealthy service, or only reports it with `on_unhealthy =
//! "ignore"`) and what `kapell status` shows. Endpoints are busybox `httpd` with a CGI script that
//! answers 500 or 200 depending on a flag file, and socat for TCP. Needs root and the packages of
//! .ci/deps; nothing is mocked or skipped.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use support::{Host, Source, eventually};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

/// Answers 200 while /srv/web-ok exists, 500 otherwise (busybox httpd passes a CGI's own status
/// line through).
const HEALTH_CGI: &str = "#!/bin/sh\n\
if [ -e /srv/web-ok ]; then printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nok\\n';\n\
else printf 'HTTP/1.0 500 Not Yet\\r\\nContent-Type: text/plain\\r\\n\\r\\nno\\n'; fi\n";

/// How long the tests keep watching after an event to see that nothing else moves: several
/// probe intervals (300 ms) and well past `retries` of them.
const WATCH: Duration = Duration::from_secs(3);

fn web_stack(extra: &str) -> String {
    format!(
        "enable = false\n\n\
         [services.web]\n\
         exec = [\"/usr/local/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:8080\", \"-h\", \"/srv/www\"]\n\
         health = {{ http = 8080, path = \"/cgi-bin/health\", interval = \"300ms\", retries = 3 }}\n\
         {extra}\n\
         [services.app]\n\
         exec = [\"/bin/sleep\", \"infinity\"]\n\
         requires = [\"web\"]\n"
    )
}

fn boot(stack: &str) -> Result<Host> {
    Host::builder()
        .kapell(KAPELL)
        .install_file("/usr/local/bin/busybox", Source::Copy("/bin/busybox".into()), 0o755)
        .install_file("/srv/www/cgi-bin/health", HEALTH_CGI, 0o755)
        .install_file("/etc/kapell/h.toml", stack, 0o644)
        .boot()
}

fn prop(host: &Host, unit: &str, p: &str) -> Result<String> {
    host.show(unit, p)
}

fn number(host: &Host, unit: &str, p: &str) -> Result<u64> {
    let v = prop(host, unit, p)?;
    v.parse().with_context(|| format!("{unit} {p}={v:?}"))
}

/// `kapell status --json h` inside the host: the row of `unit`.
fn status_row(host: &Host, unit: &str) -> Result<serde_json::Value> {
    let out = host.exec_ok(&["kapell", "status", "--json", "h"])?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).with_context(|| out.clone())?;
    rows.into_iter().find(|r| r["unit"] == unit).with_context(|| format!("no row for {unit} in {out}"))
}

/// Waits until a line of `unit` holding `needle` reaches the journal: by `-u` (the prober files its
/// lines under the unit) or by kapell's own `KAPELL_UNIT=` field (`kapell probe` runs in the unit
/// and may exit before journald has looked up its cgroup).
fn logged(host: &Host, unit: &str, needle: &str) -> Result<()> {
    eventually(&format!("{needle:?} in {unit}'s journal"), Duration::from_secs(10), || {
        let by_unit = host.journal_entries(unit)?;
        let by_field = host.journal_entries_with("KAPELL_UNIT", unit)?;
        Ok(by_unit.iter().chain(&by_field).any(|e| e.message.contains(needle)))
    })
    .with_context(|| host.journal(unit).unwrap_or_default())
}

/// A dependent waits while the check answers 500 and starts right after the first 200.
#[test]
fn native_http_check_holds_the_dependent_until_200() -> Result<()> {
    // A start period longer than the test: the failed probes do not count, and the service stays
    // "starting" however slowly the status below is read (with none, the third 500 makes it
    // "unhealthy" within a second).
    let stack = web_stack("").replace("retries = 3 }", "retries = 3, start_period = \"120s\" }");
    ensure!(stack.contains("start_period"), "{stack}");
    let host = boot(&stack)?;
    host.systemctl_ok(&["start", "--no-block", "h-app.service"])?;
    eventually("a probe answered 500", Duration::from_secs(20), || {
        let row = status_row(&host, "h-web.service")?;
        Ok(row["last_probe"]["result"]["status"] == 500)
    })?;
    let row = status_row(&host, "h-web.service")?;
    ensure!(row["health"] == "starting", "{row}");
    ensure!(row["check"] == "http://127.0.0.1:8080/cgi-bin/health", "{row}");
    // Several probes later, still held back.
    std::thread::sleep(WATCH);
    ensure!(prop(&host, "h-web.service", "ActiveState")? == "activating");
    ensure!(prop(&host, "h-app.service", "ActiveState")? == "inactive");
    ensure!(number(&host, "h-app.service", "ExecMainStartTimestampMonotonic")? == 0, "app started before web's 200");

    host.exec_ok(&["touch", "/srv/web-ok"])?;
    eventually("app active", Duration::from_secs(20), || Ok(prop(&host, "h-app.service", "ActiveState")? == "active"))?;
    let web_ready = number(&host, "h-web.service", "ActiveEnterTimestampMonotonic")?;
    let app_started = number(&host, "h-app.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(web_ready > 0 && app_started >= web_ready, "app started at {app_started} µs, web ready at {web_ready} µs");
    logged(&host, "h-web.service", "not ready yet: health check http://127.0.0.1:8080/cgi-bin/health: status 500")?;
    logged(&host, "h-web.service", "ready: health check http://127.0.0.1:8080/cgi-bin/health passed (status 200)")?;

    // The prober has taken over: healthy, nothing restarts while it keeps probing.
    eventually("healthy in kapell status", Duration::from_secs(10), || {
        Ok(status_row(&host, "h-web.service")?["health"] == "healthy")
    })?;
    let pid = prop(&host, "h-web.service", "MainPID")?;
    std::thread::sleep(WATCH);
    ensure!(prop(&host, "kapell-prober.service", "ActiveState")? == "active");
    let row = status_row(&host, "h-web.service")?;
    ensure!(row["health"] == "healthy" && row["last_probe"]["result"]["status"] == 200, "{row}");
    ensure!(
        row["last_probe"]["at_usec"].as_u64().is_some_and(|t| t > 0) && row["last_probe"]["duration_usec"].is_u64()
    );
    ensure!(status_row(&host, "h-app.service")?["health"].is_null(), "app has no check");
    ensure!(prop(&host, "h-web.service", "MainPID")? == pid && prop(&host, "h-web.service", "NRestarts")? == "0");
    let table = host.exec_ok(&["kapell", "status", "h"])?;
    ensure!(table.lines().any(|l| l.contains("h-web.service") && l.contains(" healthy ")), "{table}");
    Ok(())
}

/// A dependent waits while the TCP port is closed and starts once it opens.
#[test]
fn native_tcp_check_holds_the_dependent_until_the_port_opens() -> Result<()> {
    let stack = "enable = false\n\n\
        [services.db]\n\
        exec = [\"/bin/sh\", \"-c\", \"while [ ! -e /srv/tcp-open ]; do sleep 0.1; done; \
                 exec /usr/bin/socat TCP-LISTEN:7000,bind=127.0.0.1,fork,reuseaddr SYSTEM:true\"]\n\
        health = { tcp = 7000, interval = \"300ms\" }\n\n\
        [services.app]\n\
        exec = [\"/bin/sleep\", \"infinity\"]\n\
        requires = [\"db\"]\n";
    let host = boot(stack)?;
    host.systemctl_ok(&["start", "--no-block", "h-app.service"])?;
    eventually("a refused probe", Duration::from_secs(20), || {
        let row = status_row(&host, "h-db.service")?;
        Ok(row["last_probe"]["result"]["error"].as_str().is_some_and(|e| e.contains("connection refused")))
    })?;
    std::thread::sleep(WATCH);
    ensure!(prop(&host, "h-db.service", "ActiveState")? == "activating");
    ensure!(prop(&host, "h-app.service", "ActiveState")? == "inactive");

    host.exec_ok(&["touch", "/srv/tcp-open"])?;
    eventually("app active", Duration::from_secs(20), || Ok(prop(&host, "h-app.service", "ActiveState")? == "active"))?;
    let db_ready = number(&host, "h-db.service", "ActiveEnterTimestampMonotonic")?;
    let app_started = number(&host, "h-app.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(app_started >= db_ready, "app started at {app_started} µs, db ready at {db_ready} µs");
    logged(&host, "h-db.service", "ready: health check tcp 127.0.0.1:7000 passed (connected)")?;
    std::thread::sleep(WATCH);
    ensure!(status_row(&host, "h-db.service")?["health"] == "healthy");
    ensure!(prop(&host, "h-db.service", "NRestarts")? == "0");
    Ok(())
}

/// A native service's `cmd` check runs as its `user` with that user's supplementary groups, as
/// systemd runs the service itself: a check that reads a file of one of them passes.
#[test]
fn a_cmd_check_runs_with_the_users_groups() -> Result<()> {
    let stack = "enable = false\n\n\
        [services.db]\n\
        exec = [\"/bin/sleep\", \"infinity\"]\n\
        user = \"probe\"\n\
        health = { cmd = [\"/bin/cat\", \"/srv/flag\"], interval = \"300ms\" }\n";
    let host = Host::builder()
        .kapell(KAPELL)
        .install_file("/etc/kapell/h.toml", stack, 0o644)
        .install_file("/srv/flag", "ok\n", 0o640)
        .boot()?;
    host.exec_ok(&["groupadd", "--system", "vault"])?;
    host.exec_ok(&["useradd", "--system", "--no-create-home", "--groups", "vault", "probe"])?;
    host.exec_ok(&["chgrp", "vault", "/srv/flag"])?;
    // The service itself can read it: systemd gives `User=` its groups.
    host.exec_ok(&["systemd-run", "--wait", "--pipe", "--uid=probe", "/bin/cat", "/srv/flag"])?;
    host.systemctl_ok(&["start", "h-db.service"])?;
    eventually("db ready", Duration::from_secs(20), || Ok(prop(&host, "h-db.service", "ActiveState")? == "active"))
        .with_context(|| host.journal("h-db.service").unwrap_or_default())?;
    std::thread::sleep(WATCH);
    ensure!(status_row(&host, "h-db.service")?["health"] == "healthy", "{}", host.journal("h-db.service")?);
    Ok(())
}

/// A service stopped while its check fails is no longer counted against: its prober finds the
/// run gone at the next failed probe and forgets it, instead of counting on to `retries` and
/// trying to kill a main process that is not there (at every interval, forever).
#[test]
fn a_service_stopped_while_failing_its_check_is_left_alone() -> Result<()> {
    let stack = web_stack("").replace("retries = 3", "retries = 8");
    let host = boot(&stack)?;
    host.exec_ok(&["touch", "/srv/web-ok"])?;
    host.systemctl_ok(&["start", "h-web.service"])?;
    eventually("healthy", Duration::from_secs(10), || Ok(status_row(&host, "h-web.service")?["health"] == "healthy"))?;
    host.exec_ok(&["rm", "/srv/web-ok"])?;
    eventually("a failed probe", Duration::from_secs(10), || {
        Ok(status_row(&host, "h-web.service")?["last_probe"]["result"]["status"] == 500)
    })?;
    host.systemctl_ok(&["stop", "h-web.service"])?;
    // Past 8 failures of 300 ms, and a few more intervals.
    std::thread::sleep(Duration::from_secs(4));
    let journal = host.exec_ok(&["journalctl", "-b", "-o", "cat"])?;
    ensure!(!journal.contains("h-web.service: cannot kill"), "{journal}");
    ensure!(!journal.contains("h-web.service: killed its main process"), "{journal}");
    ensure!(!journal.contains("h-web.service: unhealthy"), "a stopped run was judged:\n{journal}");
    Ok(())
}

/// After `retries` failed probes the prober has systemd restart the service: NRestarts counts
/// it, the journal names the probe and how it failed; once healthy again nothing else moves.
#[test]
fn an_unhealthy_native_service_is_restarted_by_systemd() -> Result<()> {
    let host = boot(&web_stack(""))?;
    host.exec_ok(&["touch", "/srv/web-ok"])?;
    host.systemctl_ok(&["start", "h-web.service"])?;
    eventually("healthy", Duration::from_secs(10), || Ok(status_row(&host, "h-web.service")?["health"] == "healthy"))?;
    let first_pid = prop(&host, "h-web.service", "MainPID")?;
    ensure!(prop(&host, "h-web.service", "NRestarts")? == "0");

    host.exec_ok(&["rm", "/srv/web-ok"])?;
    eventually("a restart", Duration::from_secs(20), || Ok(number(&host, "h-web.service", "NRestarts")? >= 1))?;
    logged(
        &host,
        "h-web.service",
        "unhealthy: health check http://127.0.0.1:8080/cgi-bin/health failed 3 times in a row (last: status 500)",
    )?;
    logged(&host, "h-web.service", "killed its main process (SIGKILL) so that systemd restarts the service")?;

    // The new run waits for its own first 200, then runs on.
    host.exec_ok(&["touch", "/srv/web-ok"])?;
    eventually("active again", Duration::from_secs(20), || {
        Ok(prop(&host, "h-web.service", "ActiveState")? == "active")
    })?;
    let second_pid = prop(&host, "h-web.service", "MainPID")?;
    ensure!(second_pid != first_pid, "the main process was not replaced");
    std::thread::sleep(WATCH);
    ensure!(prop(&host, "h-web.service", "NRestarts")? == "1", "restarted more than once");
    ensure!(prop(&host, "h-web.service", "MainPID")? == second_pid);
    ensure!(status_row(&host, "h-web.service")?["health"] == "healthy");
    Ok(())
}

/// `on_unhealthy = "ignore"`: reported (journal, status), never restarted; healthy again later.
#[test]
fn on_unhealthy_ignore_only_reports() -> Result<()> {
    let host = boot(&web_stack("on_unhealthy = \"ignore\"\n"))?;
    host.exec_ok(&["touch", "/srv/web-ok"])?;
    host.systemctl_ok(&["start", "h-web.service"])?;
    eventually("healthy", Duration::from_secs(10), || Ok(status_row(&host, "h-web.service")?["health"] == "healthy"))?;
    let pid = prop(&host, "h-web.service", "MainPID")?;

    host.exec_ok(&["rm", "/srv/web-ok"])?;
    eventually("unhealthy", Duration::from_secs(20), || {
        Ok(status_row(&host, "h-web.service")?["health"] == "unhealthy")
    })?;
    logged(&host, "h-web.service", "on_unhealthy = \"ignore\": only reported")?;
    std::thread::sleep(WATCH);
    ensure!(prop(&host, "h-web.service", "ActiveState")? == "active");
    ensure!(prop(&host, "h-web.service", "NRestarts")? == "0" && prop(&host, "h-web.service", "MainPID")? == pid);
    let table = host.exec_ok(&["kapell", "status", "h"])?;
    ensure!(table.lines().any(|l| l.contains("h-web.service") && l.contains(" unhealthy ")), "{table}");

    host.exec_ok(&["touch", "/srv/web-ok"])?;
    eventually("healthy again", Duration::from_secs(20), || {
        Ok(status_row(&host, "h-web.service")?["health"] == "healthy")
    })?;
    logged(&host, "h-web.service", "healthy again")?;
    ensure!(prop(&host, "h-web.service", "NRestarts")? == "0" && prop(&host, "h-web.service", "MainPID")? == pid);
    Ok(())
}

// Container services: `http`/`tcp` checks are probed by the supervisor from the host at the
// container's address on its network (the host is on the dockerd's bridge: `network = "bridge"`).

const CONTAINER_HTTP: &str = r#"
enable = false

[services.web]
image = "kapell-test/busybox:1"
network = "bridge"
command = ["httpd", "-f", "-p", "80", "-h", "@SHARED@/www"]
volumes = ["@SHARED@:@SHARED@"]
stop_timeout = "1s"
health = { http = 80, path = "/cgi-bin/health", interval = "300ms", retries = 3 }

[services.app]
image = "kapell-test/busybox:1"
network = "bridge"
command = ["sleep", "100000"]
requires = ["web"]
stop_timeout = "1s"
"#;

/// The container's CGI (run inside it by busybox httpd) answers 200 once the flag exists.
fn container_cgi(shared: &std::path::Path) -> String {
    HEALTH_CGI.replace("/srv/web-ok", &shared.join("web-ok").display().to_string())
}

/// A container service's HTTP check answers 500, then 200: the dependent waits for the 200; then a
/// 500 again makes the supervisor stop the container and systemd restart the service.
#[test]
fn container_http_check_from_the_host_gates_the_dependent_and_restarts() -> Result<()> {
    use support::ContainerRig;
    let stack_for = |shared: &std::path::Path| CONTAINER_HTTP.replace("@SHARED@", &shared.display().to_string());
    // The stack names the shared directory, known only once the rig exists: write it after boot.
    let rig = ContainerRig::boot_on_bridge(&[], |b| b)?;
    let shared = rig.shared().to_path_buf();
    std::fs::create_dir_all(shared.join("www/cgi-bin"))?;
    std::fs::write(shared.join("www/cgi-bin/health"), container_cgi(&shared))?;
    std::process::Command::new("chmod").arg("755").arg(shared.join("www/cgi-bin/health")).status()?;
    std::fs::create_dir_all(rig.host.root().join("etc/kapell"))?;
    std::fs::write(rig.host.root().join("etc/kapell/h.toml"), stack_for(&shared))?;
    rig.systemctl(&["daemon-reload"])?;

    rig.systemctl(&["start", "--no-block", "h-app.service"])?;
    eventually("a probe answered 500", Duration::from_secs(30), || {
        Ok(status_row(&rig.host, "h-web.service")?["last_probe"]["result"]["status"] == 500)
    })?;
    let row = status_row(&rig.host, "h-web.service")?;
    let address = rig.inspect("kapell-h-web", "{{.NetworkSettings.Networks.bridge.IPAddress}}")?;
    ensure!(row["check"] == format!("http://{address}:80/cgi-bin/health"), "{row}");
    std::thread::sleep(WATCH);
    ensure!(rig.prop("h-web.service", "ActiveState")? == "activating");
    ensure!(rig.prop("h-app.service", "ActiveState")? == "inactive");

    std::fs::write(shared.join("web-ok"), "")?;
    rig.wait_active("h-app.service", Duration::from_secs(30))?;
    let web_ready = rig.mono("h-web.service", "ActiveEnterTimestampMonotonic")?;
    let app_started = rig.mono("h-app.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(app_started >= web_ready, "app started at {app_started} µs, web ready at {web_ready} µs");
    ensure!(rig.prop("h-web.service", "StatusText")? == "running, health: healthy");

    std::fs::remove_file(shared.join("web-ok"))?;
    eventually("a restart", Duration::from_secs(30), || {
        Ok(rig.prop("h-web.service", "NRestarts")?.parse::<u32>()? >= 1)
    })?;
    logged(
        &rig.host,
        "h-web.service",
        &format!(
            "container is unhealthy: health check http://{address}:80/cgi-bin/health failed 3 times in a row (last: status 500)"
        ),
    )?;
    std::fs::write(shared.join("web-ok"), "")?;
    rig.wait_active("h-web.service", Duration::from_secs(30))?;
    std::thread::sleep(WATCH);
    ensure!(rig.prop("h-web.service", "NRestarts")? == "1", "restarted more than once");
    ensure!(rig.prop("h-web.service", "StatusText")? == "running, health: healthy");
    Ok(())
}

/// An image holding one static binary (busybox, no applet links: no shell, no wget, no curl)
/// serving HTTP and TCP: both checks pass from the host, and a TCP port that opens late holds the
/// dependent back until it does.
#[test]
fn a_container_without_shell_or_curl_is_probed_from_the_host() -> Result<()> {
    use support::ContainerRig;
    const IMAGE: &str = "kapell-test/httpd-only:1";
    let stack = r#"
enable = false

[services.web]
image = "kapell-test/httpd-only:1"
network = "bridge"
pull = "never"
stop_timeout = "1s"
health = { http = 80, path = "/index.html", expect = "200", interval = "300ms" }

[services.late]
image = "kapell-test/httpd-only:1"
network = "bridge"
pull = "never"
command = ["/bin/busybox", "httpd", "-f", "-p", "7000", "-h", "/www"]
stop_timeout = "1s"
health = { tcp = 7001, interval = "300ms" }

[services.app]
image = "kapell-test/httpd-only:1"
network = "bridge"
pull = "never"
requires = ["web", "late"]
stop_timeout = "1s"
"#;
    let rig = ContainerRig::boot_on_bridge(&[("h", stack)], |b| b)?;
    import_httpd_only(rig.dockerd()?, IMAGE)?;
    let shell = rig.dockerd()?.docker(&["run", "--rm", "--network", "none", IMAGE, "sh", "-c", "true"])?;
    ensure!(!shell.status.success(), "the image has a shell");

    rig.systemctl(&["start", "--no-block", "h-app.service"])?;
    rig.wait_active("h-web.service", Duration::from_secs(30))?;
    logged(&rig.host, "h-web.service", "ready (health check passed)")?;
    // `late` listens on 7000 but is checked on 7001: refused, and app waits.
    eventually("a refused probe of late", Duration::from_secs(20), || {
        let row = status_row(&rig.host, "h-late.service")?;
        Ok(row["last_probe"]["result"]["error"].as_str().is_some_and(|e| e.contains("connection refused")))
    })?;
    std::thread::sleep(WATCH);
    ensure!(rig.prop("h-app.service", "ActiveState")? == "inactive");
    // Open 7001 inside the container with the one binary there is.
    rig.dockerd()?.docker_ok(&["exec", "-d", "kapell-h-late", "/bin/busybox", "httpd", "-p", "7001", "-h", "/www"])?;
    rig.wait_active("h-app.service", Duration::from_secs(30))?;
    let late_ready = rig.mono("h-late.service", "ActiveEnterTimestampMonotonic")?;
    let app_started = rig.mono("h-app.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(app_started >= late_ready, "app started at {app_started} µs, late ready at {late_ready} µs");
    let row = status_row(&rig.host, "h-web.service")?;
    ensure!(row["health"] == "healthy" && row["last_probe"]["result"]["status"] == 200, "{row}");
    std::thread::sleep(WATCH);
    for unit in ["h-web.service", "h-late.service", "h-app.service"] {
        ensure!(rig.prop(unit, "NRestarts")? == "0" && rig.prop(unit, "ActiveState")? == "active", "{unit} moved");
    }
    Ok(())
}

/// Imports an image of `/bin/busybox` alone (no applet links) with `/www/index.html`, whose
/// command serves it: `busybox httpd -f -p 80 -h /www`.
fn import_httpd_only(dockerd: &support::Dockerd, tag: &str) -> Result<()> {
    let rootfs = tempfile::tempdir()?;
    std::fs::create_dir_all(rootfs.path().join("bin"))?;
    std::fs::create_dir_all(rootfs.path().join("www"))?;
    std::fs::copy("/bin/busybox", rootfs.path().join("bin/busybox"))?;
    std::fs::write(rootfs.path().join("www/index.html"), "hello\n")?;
    let tar = std::process::Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(rootfs.path())
        .args(["-cf", "-", "."])
        .output()?;
    ensure!(tar.status.success(), "tar failed");
    let mut import =
        dockerd.cli(&["import", "-c", r#"CMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]"#, "-", tag]);
    let mut child = import.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn()?;
    {
        use std::io::Write as _;
        child.stdin.take().context("no stdin")?.write_all(&tar.stdout)?;
    }
    ensure!(child.wait()?.success(), "docker import {tag} failed");
    Ok(())
}
