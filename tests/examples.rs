//! The native seed scenario from examples/, on a real systemd host: a SQLite server behind a TCP
//! proxy. Starting only the proxy brings the database up first (the oneshot `init`, then
//! `server`), and a query sent to the proxy is answered by SQLite.

mod support;

use anyhow::{Context, Result, ensure};
use std::path::Path;
use support::Host;

#[test]
fn starting_only_the_proxy_brings_the_sqlite_server_up_first() -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sqlite-proxy.toml");
    // The stack is generated at boot but not started: the operator starts just the proxy.
    let text = std::fs::read_to_string(&example)?.replace("description = ", "enable = false\ndescription = ");
    let host = Host::builder()
        .kapell(env!("CARGO_BIN_EXE_kapell"))
        .install_file("/etc/kapell/sqlite-proxy.toml", text, 0o644)
        .install_file("/var/lib/sqlite-proxy/.keep", "", 0o644)
        .boot()?;
    let active = |unit: &str| -> Result<String> {
        Ok(host
            .systemctl(&["is-active", unit])?
            .stdout
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
            .trim()
            .to_string())
    };
    ensure!(active("sqlite-proxy-server.service")? == "inactive", "nothing should run before the start");

    host.systemctl_ok(&["start", "sqlite-proxy-proxy.service"])?;
    for unit in ["sqlite-proxy-init.service", "sqlite-proxy-server.service", "sqlite-proxy-proxy.service"] {
        ensure!(active(unit)? == "active", "{unit} is not active\n{}", host.journal(unit)?);
    }
    let monotonic = |unit: &str, prop: &str| -> Result<u64> {
        let value = host.show(unit, prop)?;
        value.parse().with_context(|| format!("{unit} {prop}={value:?}"))
    };
    let init_done = monotonic("sqlite-proxy-init.service", "ExecMainExitTimestampMonotonic")?;
    let server_up = monotonic("sqlite-proxy-server.service", "ExecMainStartTimestampMonotonic")?;
    let proxy_up = monotonic("sqlite-proxy-proxy.service", "ExecMainStartTimestampMonotonic")?;
    ensure!(
        init_done <= server_up && server_up <= proxy_up,
        "order: init done {init_done}, server {server_up}, proxy {proxy_up}"
    );

    // A query through the proxy port (7000) reaches sqlite behind the server port (7001).
    let query = "insert into kv values ('greeting', 'hello'); select v from kv where k = 'greeting';\n";
    let answer = host.exec_ok(&["sh", "-c", &format!("printf %s \"{query}\" | socat -t 2 - TCP:127.0.0.1:7000")])?;
    ensure!(answer.trim() == "hello", "unexpected answer through the proxy: {answer:?}");
    Ok(())
}
