//! The fleet's three peers (web1 and web2 labelled role=web, db1 role=db) with sshd and kapell,
//! shared by the fleet and federation tests, and what those tests ask of a peer.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, ensure};

use super::{Host, Net, Ssh};

/// (name, address index on the net, role label).
pub const PEERS: &[(&str, u8, &str)] = &[("web1", 11, "web"), ("web2", 12, "web"), ("db1", 13, "db")];

/// Boots the three peers and waits until each runs and answers ssh.
pub fn boot_peers(net: &Net, ssh: &Ssh, kapell: &Path) -> Result<Vec<Host>> {
    let mut hosts = PEERS
        .iter()
        .map(|(name, index, _)| Host::builder().name(name).net(net, *index).ssh(ssh).kapell(kapell).start())
        .collect::<Result<Vec<_>>>()?;
    for host in &mut hosts {
        host.wait_running()?;
        host.wait_ssh()?;
    }
    Ok(hosts)
}

/// Makes `host` a peer that never received anything: running again if it was powered off, every
/// unit of a received set stopped, the received generations (and what the peer remembers of
/// rolled-back sets) gone, no revert timer pending.
pub fn forget_fleet(host: &mut Host) -> Result<()> {
    if !host.is_running() {
        host.start_again()?;
    }
    host.wait_ssh()?;
    let _ = host.systemctl(&["stop", "kapell-revert-*.timer"]);
    host.exec_ok(&["rm", "-rf", "/etc/kapell/received"])?;
    host.systemctl_ok(&["daemon-reload"])?;
    // Units whose files went with the received set are still loaded while they run.
    let listed = host.systemctl_ok(&["list-units", "--all", "--plain", "--no-legend", "--type=service,target"])?;
    let gone: Vec<&str> = listed
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (unit, load, active) = (fields.next()?, fields.next()?, fields.next()?);
            (load == "not-found" && active != "inactive").then_some(unit)
        })
        .collect();
    if !gone.is_empty() {
        let mut args = vec!["stop"];
        args.extend(&gone);
        host.systemctl_ok(&args)?;
    }
    let _ = host.systemctl(&["reset-failed"]);
    Ok(())
}

pub fn prop(host: &Host, unit: &str, prop: &str) -> Result<String> {
    Ok(host.systemctl_ok(&["show", "-p", prop, "--value", unit])?.trim().to_string())
}

pub fn active(host: &Host, unit: &str) -> bool {
    prop(host, unit, "ActiveState").is_ok_and(|s| s == "active")
}

/// MainPID of each unit, each of which must be active.
pub fn pids(host: &Host, units: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for unit in units {
        let state = prop(host, unit, "ActiveState")?;
        ensure!(state == "active", "{}: {unit} is {state}", host.name());
        out.insert(unit.to_string(), prop(host, unit, "MainPID")?);
    }
    Ok(out)
}
