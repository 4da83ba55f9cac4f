//! `<service>.<stack>.kapell` on booted hosts (tests/support): systemd-resolved routes the domain
//! to `kapell dns`, containers get it through the supervisor, other names resolve as before, and
//! clients outside the host and its networks are refused.
//!
//! The host's Docker engine runs in the host's own network namespace (as on a real host: its
//! bridges, NAT and published ports are the host's), and the rig's bridge address answers as the
//! hosts' upstream DNS server, knowing one name outside `.kapell`: `outside.test`.

mod support;

use anyhow::{Context, Result, ensure};
use hickory_proto::op::ResponseCode;
use std::net::IpAddr;
use std::time::Duration;
use support::dns::{MANY, OUTSIDE, ask_from, ask_tcp_from, getent, nslookup, start_upstream};
use support::{Dockerd, Flavor, HOST_DOCKER_HOST, Host, Net, eventually};

const IMAGE: &str = "kapell-test/busybox:1";

const SHOP: &str = r#"enable = false

[services.db]
image = "kapell-test/busybox:1"
command = ["sh", "-c", "mkdir -p /www && echo db-here > /www/index.html && exec httpd -f -p 8080 -h /www"]
ports = ["18080:8080"]

[services.client]
image = "kapell-test/busybox:1"
command = ["sleep", "1000000"]
"#;

#[test]
fn names_resolve_on_the_host_and_in_containers_and_follow_the_service() -> Result<()> {
    let net = Net::new()?;
    let _upstream = start_upstream(net.gateway())?;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = Host::builder()
        .name("h1")
        .flavor(Flavor::Resolved)
        .net(&net, 2)
        .dns_server(net.gateway())
        .kapell(env!("CARGO_BIN_EXE_kapell"))
        .install_file("/etc/systemd/system/kapell-dns.service", repo.join("units/kapell-dns.service"), 0o644)
        .install_file("/etc/kapell/shop.toml", SHOP, 0o644)
        .install_file(
            "/etc/systemd/system.conf.d/kapell-test.conf",
            format!("[Manager]\nDefaultEnvironment=DOCKER_HOST={HOST_DOCKER_HOST}\n"),
            0o644,
        )
        .boot()?;
    let outsider = Host::builder().name("h2").net(&net, 3).boot()?;
    let dockerd = Dockerd::start_in_host(&host, net.gateway())?;
    dockerd.import_busybox(IMAGE)?;
    let ip = net.address(2).to_string();
    host.systemctl_ok(&["start", "shop.target"])?;
    for unit in ["shop-db.service", "shop-client.service"] {
        eventually(unit, Duration::from_secs(60), || Ok(host.show(unit, "ActiveState")? == "active"))?;
    }

    // Before: outside names resolve on the host and in containers; .kapell names do not.
    ensure!(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()), "host: outside.test before");
    ensure!(nslookup(&dockerd, "kapell-shop-client", "outside.test")? == [OUTSIDE.to_string()]);
    ensure!(getent(&host, "db.shop.kapell")?.is_none());

    host.systemctl_ok(&["enable", "--now", "kapell-dns.service"])?;
    eventually("db.shop.kapell on the host", Duration::from_secs(20), || {
        Ok(getent(&host, "db.shop.kapell")? == Some(ip.clone()))
    })?;
    ensure!(getent(&host, "client.shop.kapell")? == Some(ip.clone()));
    ensure!(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()), "host: outside.test with kapell dns");
    // A native process reaches db through its published port, by name.
    let page =
        host.exec_ok(&["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -T5 - TCP:db.shop.kapell:18080"])?;
    ensure!(page.contains("db-here"), "from the host: {page}");

    // A container (re)started while the responder runs gets it as its DNS server.
    host.systemctl_ok(&["restart", "shop-client.service"])?;
    eventually("the client again", Duration::from_secs(60), || {
        Ok(host.show("shop-client.service", "ActiveState")? == "active")
    })?;
    let gateway =
        dockerd.docker_ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "kapell-shop"])?;
    let subnet =
        dockerd.docker_ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "kapell-shop"])?;
    let (gateway, subnet) = (gateway.trim().to_string(), subnet.trim().to_string());
    // The responder first, then the host's own server (for when the responder is stopped).
    let dns = dockerd.docker_ok(&["inspect", "-f", "{{json .HostConfig.Dns}}", "kapell-shop-client"])?;
    ensure!(dns.trim() == format!("[\"{gateway}\",\"{}\"]", net.gateway()), "the client's DNS: {dns}");
    eventually("db.shop.kapell in the container", Duration::from_secs(10), || {
        Ok(nslookup(&dockerd, "kapell-shop-client", "db.shop.kapell")? == [ip.clone()])
    })?;
    let page = dockerd.docker_ok(&[
        "exec",
        "kapell-shop-client",
        "timeout",
        "10",
        "wget",
        "-qO-",
        "http://db.shop.kapell:18080/",
    ])?;
    ensure!(page.trim() == "db-here", "from the container: {page}");
    ensure!(nslookup(&dockerd, "kapell-shop-client", "outside.test")? == [OUTSIDE.to_string()], "container: outside");
    ensure!(!nslookup(&dockerd, "kapell-shop-client", "db")?.is_empty(), "Docker's own names still resolve");

    // db stops: it leaves the answers, on the host and in the container; it comes back.
    host.systemctl_ok(&["stop", "shop-db.service"])?;
    eventually("db gone from the host's answers", Duration::from_secs(3), || {
        Ok(getent(&host, "db.shop.kapell")?.is_none())
    })?;
    ensure!(nslookup(&dockerd, "kapell-shop-client", "db.shop.kapell")?.is_empty(), "db gone in the container");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        ensure!(getent(&host, "db.shop.kapell")?.is_none(), "db came back while stopped");
        ensure!(getent(&host, "client.shop.kapell")? == Some(ip.clone()), "client moved");
    }
    host.systemctl_ok(&["start", "shop-db.service"])?;
    eventually("db back", Duration::from_secs(30), || Ok(getent(&host, "db.shop.kapell")? == Some(ip.clone())))?;

    // Not an open resolver: from another host, through a route to the host's container network,
    // every query is refused; from the host itself the same query is answered.
    outsider.exec_ok(&["ip", "route", "add", &subnet, "via", &ip])?;
    let gateway_ip: IpAddr = gateway.parse()?;
    let (code, _) = ask_from(outsider.leader_pid()?, gateway_ip, "db.shop.kapell.")?;
    ensure!(code == ResponseCode::Refused, "a .kapell name asked from another host: {code:?}");
    let (code, _) = ask_from(outsider.leader_pid()?, gateway_ip, "outside.test.")?;
    ensure!(code == ResponseCode::Refused, "forwarding for another host: {code:?}");
    let (code, answers) = ask_from(host.leader_pid()?, gateway_ip, "db.shop.kapell.")?;
    ensure!(code == ResponseCode::NoError && answers.len() == 1, "from the host itself: {code:?} {answers:?}");
    // Forwarded answers come back whole: one too large for UDP (the responder asks the upstream
    // again over TCP), and a negative one with the upstream's SOA, by which resolvers cache it.
    let many = ask_tcp_from(host.leader_pid()?, gateway_ip, "many.test.")?;
    ensure!(many == (ResponseCode::NoError, MANY, 0), "a large forwarded answer: {many:?}");
    let missing = ask_tcp_from(host.leader_pid()?, gateway_ip, "missing.test.")?;
    ensure!(missing == (ResponseCode::NXDomain, 0, 1), "a negative forwarded answer: {missing:?}");

    // kapell status shows what each name answers.
    let status = host.exec_ok(&["kapell", "status", "shop"])?;
    ensure!(status.contains("db.shop.kapell") && status.contains(&format!("{ip} (h1)")), "{status}");
    let json: serde_json::Value = serde_json::from_str(&host.exec_ok(&["kapell", "status", "--json", "shop"])?)?;
    let db = json.as_array().and_then(|rows| rows.iter().find(|r| r["service"] == "db")).context("db row")?;
    ensure!(db["name"] == "db.shop.kapell", "{db}");
    ensure!(db["answers"][0]["ip"] == ip.as_str(), "{db}");

    // Stopping the responder takes the route away again; other names are untouched.
    host.systemctl_ok(&["stop", "kapell-dns.service"])?;
    let link = host.exec(&["ip", "link", "show", "kapell-dns"])?;
    ensure!(!link.status.success(), "the link kapell-dns outlived the responder");
    eventually("db.shop.kapell gone with the responder", Duration::from_secs(10), || {
        Ok(getent(&host, "db.shop.kapell")?.is_none())
    })?;
    eventually("outside.test after", Duration::from_secs(10), || {
        Ok(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()))
    })?;
    // A container keeps resolving every other name: Docker's embedded DNS asks its next server.
    ensure!(
        nslookup(&dockerd, "kapell-shop-client", "outside.test")? == [OUTSIDE.to_string()],
        "container: outside.test with the responder stopped"
    );
    ensure!(nslookup(&dockerd, "kapell-shop-client", "db.shop.kapell")?.is_empty(), "container: db with no responder");
    drop(dockerd);
    Ok(())
}

const APP: &str = r#"[services.web]
exec = ["/bin/sleep", "infinity"]
"#;

/// An operator's own global `DNS=` (in a resolved.conf drop-in that sorts before any other) is
/// left as it is: `.kapell` names go to the responder alone, through kapell's link, and every
/// other name to the operator's server alone, also after resolved restarts. The operator's
/// DNS over TLS is not tried on the responder, which does not speak it.
#[test]
fn names_resolve_beside_an_operators_global_dns_server() -> Result<()> {
    let net = Net::new()?;
    let _upstream = start_upstream(net.gateway())?;
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = Host::builder()
        .name("h1")
        .flavor(Flavor::Resolved)
        .net(&net, 2)
        .kapell(env!("CARGO_BIN_EXE_kapell"))
        .install_file("/etc/systemd/system/kapell-dns.service", repo.join("units/kapell-dns.service"), 0o644)
        .install_file("/etc/kapell/app.toml", APP, 0o644)
        .install_file(
            "/etc/systemd/resolved.conf.d/00-operator.conf",
            format!("[Resolve]\nDNS={}\nDNSOverTLS=opportunistic\n", net.gateway()),
            0o644,
        )
        .boot()?;
    let ip = net.address(2).to_string();
    host.systemctl_ok(&["start", "app.target"])?;
    eventually("outside.test before", Duration::from_secs(20), || {
        Ok(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()))
    })?;
    host.systemctl_ok(&["start", "kapell-dns.service"])?;
    eventually("web.app.kapell on the host", Duration::from_secs(20), || {
        Ok(getent(&host, "web.app.kapell")? == Some(ip.clone()))
    })?;
    ensure!(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()), "outside.test with kapell dns");
    // What resolved was told: kapell's link alone carries the responder, for ~kapell only; no
    // resolved.conf drop-in (whose DNS= would be a global server).
    let settings = [
        ("dns", "127.0.0.153"),
        ("domain", "~kapell"),
        ("default-route", "no"),
        ("dnsovertls", "no"),
        ("dnssec", "no"),
    ];
    for (setting, expected) in settings {
        let said = host.exec_ok(&["resolvectl", setting, "kapell-dns"])?;
        ensure!(said.trim().ends_with(&format!("(kapell-dns): {expected}")), "resolvectl {setting}: {said}");
    }
    let drop_ins = host.exec_ok(&["find", "/run/systemd", "/etc/systemd", "-path", "*/resolved.conf.d/*"])?;
    ensure!(!drop_ins.contains("kapell"), "a resolved drop-in of kapell's: {drop_ins}");
    // resolved keeps the link's settings across its own restart.
    host.systemctl_ok(&["restart", "systemd-resolved.service"])?;
    eventually("web.app.kapell after resolved restarts", Duration::from_secs(10), || {
        Ok(getent(&host, "web.app.kapell")? == Some(ip.clone()))
    })?;

    // The responder stops: the link and its route go, the operator's servers stay.
    host.systemctl_ok(&["stop", "kapell-dns.service"])?;
    ensure!(!host.exec(&["ip", "link", "show", "kapell-dns"])?.status.success(), "kapell-dns outlived the responder");
    eventually("web.app.kapell gone with the responder", Duration::from_secs(10), || {
        Ok(getent(&host, "web.app.kapell")?.is_none())
    })?;
    ensure!(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()), "outside.test after");

    // A link it cannot make (another link has its pair's name): no half a route, a warning,
    // and `kapell status` says so; the other link is not touched.
    host.exec_ok(&["ip", "link", "add", "kapell-dns-peer", "type", "veth", "peer", "name", "someone-else"])?;
    host.systemctl_ok(&["start", "kapell-dns.service"])?;
    ensure!(host.show("kapell-dns.service", "ActiveState")? == "active", "the responder did not start");
    ensure!(!host.exec(&["ip", "link", "show", "kapell-dns"])?.status.success(), "half a route: kapell-dns is there");
    ensure!(host.exec(&["ip", "link", "show", "someone-else"])?.status.success(), "the other link went");
    let journal = host.exec_ok(&["journalctl", "-u", "kapell-dns.service", "--no-pager"])?;
    ensure!(journal.contains("cannot route .kapell through systemd-resolved"), "no warning:\n{journal}");
    let status = host.exec(&["kapell", "status"])?;
    let said = String::from_utf8_lossy(&status.stderr);
    ensure!(said.contains("could not route .kapell through this host's systemd-resolved"), "kapell status: {said}");

    // Another port than 53 (`kapell dns --port`): resolved is told the port, so the names
    // resolve through it as on 53.
    host.exec_ok(&["ip", "link", "delete", "kapell-dns-peer"])?;
    let drop_in = host.root().join("etc/systemd/system/kapell-dns.service.d");
    std::fs::create_dir_all(&drop_in)?;
    std::fs::write(drop_in.join("port.conf"), "[Service]\nExecStart=\nExecStart=/usr/bin/kapell dns --port 5353\n")?;
    host.systemctl_ok(&["daemon-reload"])?;
    host.systemctl_ok(&["restart", "kapell-dns.service"])?;
    eventually("web.app.kapell through port 5353", Duration::from_secs(20), || {
        Ok(getent(&host, "web.app.kapell")? == Some(ip.clone()))
    })?;
    let said = host.exec_ok(&["resolvectl", "dns", "kapell-dns"])?;
    ensure!(said.trim().ends_with("(kapell-dns): 127.0.0.153:5353"), "resolvectl dns: {said}");
    ensure!(getent(&host, "outside.test")? == Some(OUTSIDE.to_string()), "outside.test with the responder on 5353");
    Ok(())
}
