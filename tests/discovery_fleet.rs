//! Names across a fleet (tests/support): this machine is the controller, three booted hosts with
//! systemd-resolved and sshd run `kapell receive`. The catalog travels in each host's set, the
//! peer starts `kapell dns`, and from h1 a native process and a container both resolve
//! `db.data.kapell` to h3 and reach db there; placed on two hosts, both answer; with the
//! controller gone, the names keep resolving, also after the responder restarts.

mod support;

use anyhow::{Context, Result, ensure};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::dns::{OUTSIDE, getent, nslookup, start_upstream};
use support::{Dockerd, Flavor, HOST_DOCKER_HOST, Host, Net, Ssh, eventually};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
const IMAGE: &str = "kapell-test/busybox:1";

/// db answers every connection with the name of the host it runs on; its TCP check is what
/// every host's responder probes.
fn data(db_hosts: &str) -> String {
    format!(
        "[services.db]\nexec = [\"/usr/bin/socat\", \"TCP-LISTEN:15432,fork,reuseaddr\", \"SYSTEM:hostname\"]\n\
         health = {{ tcp = 15432, interval = \"1s\" }}\non_unhealthy = \"ignore\"\n\
         placement = {{ hosts = [{db_hosts}] }}\n"
    )
}

/// Two probe intervals of db's check, and the answers' TTL.
const TWO_INTERVALS: Duration = Duration::from_secs(2 + 2);

const WEB: &str = r#"[services.web]
exec = ["/bin/sleep", "infinity"]
placement = { hosts = ["h1", "h2"] }

[services.client]
image = "kapell-test/busybox:1"
command = ["sleep", "1000000"]
placement = { hosts = ["h1"] }
"#;

/// Every address `getent ahostsv4 NAME` lists on `host`.
fn addresses(host: &Host, name: &str) -> Result<BTreeSet<String>> {
    let out = host.exec(&["getent", "ahostsv4", name])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

#[test]
fn a_service_on_another_host_resolves_and_answers_from_hosts_and_containers() -> Result<()> {
    let net = Net::new()?;
    start_upstream(net.gateway())?;
    let ssh = Ssh::new()?;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hosts = Vec::new();
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        let builder = Host::builder()
            .name(name)
            .flavor(Flavor::Resolved)
            .net(&net, 2 + i as u8)
            .dns_server(net.gateway())
            .ssh(&ssh)
            .kapell(KAPELL)
            .install_file("/etc/systemd/system/kapell-dns.service", repo.join("units/kapell-dns.service"), 0o644)
            .install_file(
                "/etc/systemd/system.conf.d/kapell-test.conf",
                format!("[Manager]\nDefaultEnvironment=DOCKER_HOST={HOST_DOCKER_HOST}\n"),
                0o644,
            );
        hosts.push(builder.start()?);
    }
    for host in &mut hosts {
        host.wait_running()?;
        host.wait_ssh()?;
    }
    let (h1, h3) = (&hosts[0], &hosts[2]);
    let dockerd = Dockerd::start_in_host(h1, net.gateway())?;
    dockerd.import_busybox(IMAGE)?;
    let ip = |i: u8| net.address(2 + i).to_string();

    // The controller: hosts by their ssh aliases (their `ip` comes from ssh's HostName).
    let dir = tempfile::tempdir()?;
    let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
    let mut fleet = format!("[defaults]\nssh_config = \"{}\"\n\n", ssh.config_path().display());
    for name in ["h1", "h2", "h3"] {
        fleet.push_str(&format!("[hosts.{name}]\naddress = \"{name}\"\n\n"));
    }
    std::fs::write(dir.path().join("fleet.toml"), fleet)?;
    std::fs::write(dir.path().join("data.toml"), data("\"h3\""))?;
    std::fs::write(dir.path().join("web.toml"), WEB)?;
    let kapell = |args: &[&str]| -> Result<String> {
        let out = Command::new(KAPELL)
            .env("KAPELL_CONFIG_DIR", dir.path())
            .env("KAPELL_RUNTIME_DIR", runtime.path())
            .env("KAPELL_STATE_DIR", runtime.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "kapell {}: {text}", args.join(" "));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    kapell(&["fleet", "apply", "--no-rollout"])?;

    // The peer started the responder with the catalog it received.
    let catalog = h1.exec_ok(&["sh", "-c", "cat /etc/kapell/received/current/catalog.json"])?;
    ensure!(catalog.contains(&format!("\"ip\":\"{}\"", ip(2))), "h3's ip in h1's catalog: {catalog}");
    ensure!(h1.show("kapell-dns.service", "ActiveState")? == "active", "kapell-dns on h1");
    ensure!(h1.systemctl_ok(&["is-enabled", "kapell-dns.service"])?.trim() == "enabled");

    // From h1: a native process resolves db to h3 and reaches it through its port.
    eventually("db.data.kapell from h1", Duration::from_secs(20), || Ok(getent(h1, "db.data.kapell")? == Some(ip(2))))?;
    let answer = h1.exec_ok(&["socat", "-T5", "-", "TCP:db.data.kapell:15432"])?;
    ensure!(answer.trim() == "h3", "db answered {answer:?}");
    ensure!(addresses(h1, "web.web.kapell")? == BTreeSet::from([ip(0), ip(1)]), "web on h1 and h2");
    ensure!(getent(h1, "outside.test")? == Some(OUTSIDE.to_string()), "other names resolve as before");

    // From a container on h1: the same, and Docker's own names still work.
    eventually("client running", Duration::from_secs(60), || {
        Ok(h1.show("web-client.service", "ActiveState")? == "active")
    })?;
    ensure!(nslookup(&dockerd, "kapell-web-client", "db.data.kapell")? == [ip(2)], "db from the container");
    let answer = dockerd.docker_ok(&["exec", "kapell-web-client", "timeout", "5", "nc", "db.data.kapell", "15432"])?;
    ensure!(answer.trim() == "h3", "db answered the container {answer:?}");
    ensure!(nslookup(&dockerd, "kapell-web-client", "outside.test")? == [OUTSIDE.to_string()]);

    // db on two hosts: both answer.
    std::fs::write(dir.path().join("data.toml"), data("\"h2\", \"h3\""))?;
    kapell(&["fleet", "apply", "--no-rollout"])?;
    eventually("db on h2 and h3", Duration::from_secs(20), || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(1), ip(2)]))
    })?;
    let status = kapell(&["fleet", "status"])?;
    ensure!(status.contains("db.data.kapell") && status.contains(&format!("{} (h2)", ip(1))), "{status}");

    // The controller is gone (nothing asks the hosts any more): the names hold, also when the
    // responder restarts from the catalog on disk, and they still follow health, probed by h1.
    drop(runtime);
    h1.systemctl_ok(&["restart", "kapell-dns.service"])?;
    for _ in 0..5 {
        eventually("db after the restart", Duration::from_secs(10), || {
            Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(1), ip(2)]))
        })?;
        std::thread::sleep(Duration::from_millis(500));
    }
    let h2 = &hosts[1];
    h2.systemctl_ok(&["stop", "data-db.service"])?;
    eventually("db on h2 gone from h1's answers", TWO_INTERVALS, || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(2)]))
    })?;
    h3.systemctl_ok(&["stop", "data-db.service"])?;
    eventually("db gone everywhere", TWO_INTERVALS, || Ok(addresses(h1, "db.data.kapell")?.is_empty()))?;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        ensure!(addresses(h1, "db.data.kapell")?.is_empty(), "db came back while stopped");
        ensure!(addresses(h1, "web.web.kapell")? == BTreeSet::from([ip(0), ip(1)]), "web moved");
    }
    h3.systemctl_ok(&["start", "data-db.service"])?;
    eventually("db back on h3", TWO_INTERVALS + Duration::from_secs(2), || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(2)]))
    })?;
    ensure!(nslookup(&dockerd, "kapell-web-client", "db.data.kapell")? == [ip(2)], "the container follows too");
    ensure!(getent(h3, "web.web.kapell")?.is_some(), "h3 resolves the fleet's names too");
    let _ = h3.exec(&["true"]).context("h3 still up")?;
    drop(dockerd);
    Ok(())
}
