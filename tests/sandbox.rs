//! kapell's main job, end to end, on a local sandbox: a booted systemd host (nspawn) with kapell
//! installed, a real Docker engine, and the web-app stack from examples/. It is the README's first
//! command, and a test like any other (it asserts what it shows):
//!
//!     sudo .ci/deps && sudo cargo test --test sandbox -- --nocapture
//!
//! It checks and applies the stack, shows `kapell status`, fetches the web page and the page web
//! builds from db's data (fetched by name on the stack's network), and tears everything down.

mod support;

use anyhow::{Context, Result, ensure};
use std::path::Path;
use support::{Dockerd, Host};

const IMAGE: &str = "kapell-demo/busybox:1";

/// Runs a command in the host, echoes it and its output like a terminal session would.
fn show(host: &Host, argv: &[&str]) -> Result<String> {
    println!("\n[root@sandbox ~]# {}", argv.join(" "));
    let output = host.exec(argv)?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    print!("{text}");
    ensure!(output.status.success(), "`{}` failed ({})", argv.join(" "), output.status);
    Ok(text)
}

#[test]
fn sandbox_runs_the_web_app_stack() -> Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    println!("starting a Docker engine and importing {IMAGE} (no registry)...");
    let dockerd = Dockerd::start()?;
    dockerd.import_busybox(IMAGE)?;
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
    println!("\ntearing the sandbox down...");
    Ok(())
}
