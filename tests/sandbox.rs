//! kapell's main job, end to end, on a local sandbox: a booted systemd host (nspawn) with kapell
//! installed, a real Docker engine, and the web-app stack from examples/. It is the README's first
//! command, and a test like any other (it asserts what it shows):
//!
//!     sudo .ci/deps && sudo cargo test --test sandbox -- --nocapture
//!
//! It checks and applies the stack, shows `kapell status`, fetches the web page and the page web
//! builds from db's data (fetched by name on the stack's network); then starts only the proxy of
//! examples/sqlite-docker.toml (the seed scenario as containers) and queries SQLite through it;
//! and tears everything down.

mod support;

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::Duration;
use support::{Dockerd, Host};

const IMAGE: &str = "kapell-demo/busybox:1";
/// busybox plus Debian's sqlite3 and socat, for examples/sqlite-docker.toml.
const SQLITE_IMAGE: &str = "kapell-demo/sqlite-socat:1";

/// Runs a command in the host, echoes it and its output like a terminal session would.
fn show(host: &Host, argv: &[&str]) -> Result<String> {
    println!("\n[root@sandbox ~]# {}", argv.join(" "));
    let output = host.exec(argv)?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    print!("{text}");
    ensure!(output.status.success(), "`{}` failed ({})", argv.join(" "), output.status);
    Ok(text)
}

/// Waits, quietly, until `script` succeeds in `container`: a container without a health check runs
/// before its server listens.
fn until_listening(dockerd: &Dockerd, container: &str, script: &str) -> Result<()> {
    support::eventually(&format!("{container} listening"), Duration::from_secs(10), || {
        Ok(dockerd.docker(&["exec", container, "sh", "-c", script])?.status.success())
    })
}

#[test]
fn sandbox_runs_the_web_app_stack() -> Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    println!("starting a Docker engine and importing {IMAGE} and {SQLITE_IMAGE} (no registry)...");
    let dockerd = Dockerd::start()?;
    dockerd.import_busybox(IMAGE)?;
    dockerd.import_busybox_with(SQLITE_IMAGE, &["/usr/bin/sqlite3", "/usr/bin/socat"])?;
    println!("booting a systemd host with kapell installed...");
    let host = Host::builder().name("sandbox").kapell(env!("CARGO_BIN_EXE_kapell")).docker(&dockerd).boot()?;

    // The operator's part: put the stack in /etc/kapell, check it, apply it.
    println!("\n[root@sandbox ~]# cp examples/webapp.toml /etc/kapell/");
    let etc = host.root().join("etc/kapell");
    std::fs::create_dir_all(&etc)?;
    std::fs::copy(examples.join("webapp.toml"), etc.join("webapp.toml"))?;

    show(&host, &["kapell", "check"])?;
    let applied = show(&host, &["kapell", "apply"])?;
    ensure!(applied.contains("webapp-web.service"), "apply did not start web:\n{applied}");
    let again = show(&host, &["kapell", "apply"])?;
    ensure!(again.to_lowercase().contains("nothing to do"), "a second apply changed something:\n{again}");

    let status = show(&host, &["kapell", "status", "webapp"])?;
    for service in ["webapp-db.service", "webapp-web.service"] {
        let line = status.lines().find(|l| l.contains(service)).with_context(|| format!("{service} missing"))?;
        ensure!(line.contains("active") && line.contains("running"), "{service} is not running: {line}");
    }
    ensure!(status.contains("healthy"), "db's health is not shown:\n{status}");

    // The page, fetched from inside the web container (the sandbox host has a private network).
    until_listening(&dockerd, "kapell-webapp-web", "wget -q -O /dev/null http://127.0.0.1:8080/")?;
    println!("\n$ docker exec kapell-webapp-web wget -qO- http://127.0.0.1:8080/");
    let page = dockerd.docker_ok(&["exec", "kapell-webapp-web", "wget", "-qO-", "http://127.0.0.1:8080/"])?;
    print!("{page}");
    ensure!(page.contains("kapell web app"), "unexpected page: {page}");

    // web asks db by name on the stack's network `kapell-webapp`.
    println!("\n$ docker exec kapell-webapp-web wget -qO- http://127.0.0.1:8080/cgi-bin/db");
    let data = dockerd.docker_ok(&["exec", "kapell-webapp-web", "wget", "-qO-", "http://127.0.0.1:8080/cgi-bin/db"])?;
    print!("{data}");
    ensure!(data.starts_with("started "), "web did not get db's data by name: {data:?}");
    let status = show(&host, &["kapell", "status", "--json", "webapp"])?;
    ensure!(status.contains("\"kapell-webapp\": \"10."), "no container address in status --json:\n{status}");

    show(&host, &["systemctl", "--no-pager", "list-dependencies", "webapp.target"])?;
    show(&host, &["kapell", "logs", "webapp.db", "-n", "5"])?;

    // The seed scenario as containers: start only the proxy; systemd brings the server up first,
    // and the proxy reaches it as `server:12345` on the stack's network.
    println!("\n[root@sandbox ~]# cp examples/sqlite-docker.toml /etc/kapell/ && systemctl daemon-reload");
    std::fs::copy(examples.join("sqlite-docker.toml"), etc.join("sqlite-docker.toml"))?;
    host.systemctl_ok(&["daemon-reload"])?;
    show(&host, &["systemctl", "start", "sqlite-docker-proxy.service"])?;
    let active =
        show(&host, &["systemctl", "is-active", "sqlite-docker-server.service", "sqlite-docker-proxy.service"])?;
    ensure!(active.lines().all(|l| l == "active"), "the seed stack is not up:\n{active}");
    until_listening(&dockerd, "kapell-sqlite-docker-proxy", "socat -u /dev/null TCP:127.0.0.1:12346")?;
    let query = "create table if not exists kv (k text, v text); insert into kv values ('seed', 'linked by name'); select v from kv;";
    println!("\n$ docker exec kapell-sqlite-docker-proxy sh -c \"echo \\\"{query}\\\" | socat - TCP:127.0.0.1:12346\"");
    let script = format!("echo \"{query}\" | socat -t 2 - TCP:127.0.0.1:12346");
    let answer = dockerd.docker_ok(&["exec", "kapell-sqlite-docker-proxy", "sh", "-c", &script])?;
    print!("{answer}");
    ensure!(answer.trim() == "linked by name", "unexpected answer through the proxy: {answer:?}");
    println!("\ntearing the sandbox down...");
    Ok(())
}
