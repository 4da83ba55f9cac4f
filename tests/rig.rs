//! Tests of the test rig itself (`tests/support`): hosts boot and run units, hosts on a bridge
//! answer ssh, a private dockerd runs an imported image and is reachable from a host, and each
//! object leaves nothing behind once dropped. Needs root and the packages of .ci/deps.

mod support;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use support::{Dockerd, Footprint, Host, Net, Ssh, eventually};

const BUSYBOX: &str = "kapell-test/busybox:1";

#[test]
fn host_boots_runs_a_unit_and_cleans_up() -> Result<()> {
    let host =
        Host::builder().name("alpha").install_file("/etc/rig-marker", "installed before boot\n", 0o600).boot()?;
    ensure!(host.exec_ok(&["hostname"])?.trim() == "alpha", "wrong hostname");
    ensure!(host.systemctl_ok(&["is-active", "dbus"])?.trim() == "active");
    ensure!(host.exec_ok(&["cat", "/etc/rig-marker"])? == "installed before boot\n");

    std::fs::write(
        host.root().join("etc/systemd/system/rig-hello.service"),
        "[Service]\nType=oneshot\nExecStart=/bin/echo hello-from-rig\n",
    )?;
    host.systemctl_ok(&["daemon-reload"])?;
    host.systemctl_ok(&["start", "rig-hello.service"])?;
    eventually("the unit's output in the journal", Duration::from_secs(10), || {
        Ok(host.journal("rig-hello.service")?.contains("hello-from-rig"))
    })?;

    // The system bus is reachable from outside, as kapell apply will use it.
    let bus = host.dbus_address()?;
    support::run_ok(Command::new("busctl").arg(format!("--address={bus}")).args([
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.DBus.Peer",
        "Ping",
    ]))
    .context("busctl over the host's bus")?;

    let footprint = Footprint::new().host(&host);
    drop(host);
    footprint.assert_gone()
}

#[test]
fn enabled_unit_survives_reboot() -> Result<()> {
    let mut host = Host::builder()
        .install_file(
            "/etc/systemd/system/rig-keep.service",
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            0o644,
        )
        .boot()?;
    host.systemctl_ok(&["enable", "--now", "rig-keep.service"])?;
    let first_boot = host.leader_pid()?;
    host.reboot()?;
    ensure!(host.leader_pid()? != first_boot, "host did not restart");
    ensure!(host.systemctl_ok(&["is-active", "rig-keep.service"])?.trim() == "active");

    let footprint = Footprint::new().host(&host);
    drop(host);
    footprint.assert_gone()
}

#[test]
fn hosts_on_a_net_answer_ssh() -> Result<()> {
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let mut hosts = vec![
        Host::builder().name("web1").net(&net, 10).ssh(&ssh).start()?,
        Host::builder().name("web2").net(&net, 11).ssh(&ssh).start()?,
    ];
    for host in &mut hosts {
        host.wait_running()?;
        host.wait_ssh()?;
    }
    for host in &hosts {
        let addr = host.address().context("host has an address")?.to_string();
        for dest in [host.name(), addr.as_str()] {
            let out = support::run_ok(ssh.command(dest).arg("hostname"))?;
            let answer = String::from_utf8_lossy(&out.stdout);
            ensure!(answer.trim() == host.name(), "ssh {dest} hostname: {answer:?}");
        }
    }
    // Hosts reach each other over the bridge too.
    let web2 = net.address(11).to_string();
    hosts[0].exec_ok(&["bash", "-c", &format!("exec 3<>/dev/tcp/{web2}/22")])?;

    let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
    drop(hosts);
    drop(net);
    footprint.assert_gone()
}

#[test]
fn dockerd_runs_busybox_and_hosts_reach_it() -> Result<()> {
    let dockerd = Dockerd::start()?;
    dockerd.import_busybox(BUSYBOX)?;
    let hi = dockerd.docker_ok(&["run", "--rm", BUSYBOX, "echo", "hi"])?;
    ensure!(hi.trim() == "hi", "docker run printed {hi:?}");
    // Containers sit on the private bridge, not docker0.
    let addrs = dockerd.docker_ok(&["run", "--rm", BUSYBOX, "ip", "-4", "-o", "addr"])?;
    let subnet = dockerd.net().subnet();
    let prefix = subnet.trim_end_matches("0/24");
    ensure!(addrs.contains(prefix), "container not on {subnet}: {addrs}");

    let host = Host::builder().docker(&dockerd).bind_ro("/usr/bin/docker", "/usr/local/bin/docker").boot()?;
    host.exec_ok(&["test", "-S", "/var/run/docker.sock"])?;
    let images = host.exec_ok(&["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"])?;
    ensure!(images.lines().any(|l| l == BUSYBOX), "host sees images {images:?}");

    // A container left running is removed by Drop.
    dockerd.docker_ok(&["run", "-d", "--name", "sleeper", BUSYBOX, "sleep", "600"])?;
    let footprint = Footprint::new().host(&host).dockerd(&dockerd);
    drop(host);
    drop(dockerd);
    footprint.assert_gone()
}

#[test]
fn nets_get_distinct_subnets() -> Result<()> {
    let nets = (0..4).map(|_| Net::new()).collect::<Result<Vec<_>>>()?;
    let mut subnets: Vec<String> = nets.iter().map(Net::subnet).collect();
    subnets.sort();
    subnets.dedup();
    ensure!(subnets.len() == nets.len(), "subnets collide: {subnets:?}");
    let footprint = nets.iter().fold(Footprint::new(), Footprint::net);
    drop(nets);
    footprint.assert_gone()
}
