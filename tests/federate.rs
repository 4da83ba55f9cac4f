//! The fleet kept converged (SPEC §8): `kapell federate` running under a real systemd
//! (`kapell-federation.service` on a controller host), three peers with sshd. Drift repaired,
//! a controller outage that restarts nothing, a peer down and back (with backoff), rolling
//! updates that stop and roll back on a bad version and keep serving on a good one, the daemon
//! killed mid-rollout, and a push that cuts a peer's network healing on its own.
//! Needs root and the packages in TESTENV.md; nothing is mocked, nothing is skipped.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use support::{Footprint, Host, Net, Ssh};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
const INTERVAL_SECS: u64 = 3;
const CONFIRM_SECS: u64 = 10;

fn fleet_toml(net: &Net) -> String {
    let mut text = format!(
        "[defaults]\nssh_config = \"/etc/kapell/ssh_config\"\nreconcile_interval = \"{INTERVAL_SECS}s\"\n\
         confirm_timeout = \"{CONFIRM_SECS}s\"\n\n[rollout]\nmax_parallel = 1\nmin_healthy_time = \"2s\"\n\
         healthy_deadline = \"12s\"\n\n"
    );
    for (name, index, role) in [("web1", 11, "web"), ("web2", 12, "web"), ("db1", 13, "db")] {
        text.push_str(&format!(
            "[hosts.{name}]\naddress = \"{}\"\nlabels = {{ role = \"{role}\" }}\n\n",
            net.address(index)
        ));
    }
    text
}

/// `shop.web` (its argv given) on role=web, `data.db` on db1, `agent.node` everywhere.
fn shop(web: &str) -> String {
    format!(
        "[services.web]\nexec = {web}\nrestart = \"always\"\nrestart_delay = \"500ms\"\n\
         placement = {{ labels = {{ role = \"web\" }} }}\n\n\
         [services.cache]\nexec = [\"/bin/sleep\", \"8000001\"]\nplacement = {{ labels = {{ role = \"web\" }} }}\n"
    )
}

const DATA: &str = "[services.db]\nexec = [\"/bin/sleep\", \"8000002\"]\nplacement = { hosts = [\"db1\"] }\n";
const AGENT: &str = "[services.node]\nexec = [\"/bin/sleep\", \"8000003\"]\nplacement = { global = true }\n";

fn sleep_argv(n: u64) -> String {
    format!("[\"/bin/sleep\", \"{n}\"]")
}

/// The controller: kapell, the fleet's ssh key, config and known_hosts under /etc/kapell, and
/// kapell-federation.service from units/.
fn boot_controller(net: &Net, ssh: &Ssh) -> Result<Host> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(ssh.config_path())?
        .replace(&ssh.key_path().display().to_string(), "/etc/kapell/id_ed25519")
        .replace(&ssh.known_hosts_path().display().to_string(), "/etc/kapell/known_hosts");
    Host::builder()
        .name("ctl")
        .net(net, 20)
        .ssh(ssh)
        .kapell(KAPELL)
        .install_file("/etc/kapell/id_ed25519", ssh.key_path(), 0o600)
        .install_file("/etc/kapell/known_hosts", ssh.known_hosts_path(), 0o644)
        .install_file("/etc/kapell/ssh_config", config, 0o644)
        .install_file("/etc/kapell/fleet.toml", fleet_toml(net), 0o644)
        .install_file("/etc/kapell/shop.toml", shop(&sleep_argv(8_000_000)), 0o644)
        .install_file("/etc/kapell/data.toml", DATA, 0o644)
        .install_file("/etc/kapell/agent.toml", AGENT, 0o644)
        .install_file(
            "/etc/systemd/system/kapell-federation.service",
            repo.join("units/kapell-federation.service"),
            0o644,
        )
        .boot()
}

fn write(ctl: &Host, name: &str, text: &str) -> Result<()> {
    // Through a temporary file and rename, as an editor saves: one inotify event for the daemon.
    let dir = ctl.root().join("etc/kapell");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("cannot write {name}"))
}

fn prop(host: &Host, unit: &str, prop: &str) -> Result<String> {
    Ok(host.systemctl_ok(&["show", "-p", prop, "--value", unit])?.trim().to_string())
}

fn active(host: &Host, unit: &str) -> bool {
    prop(host, unit, "ActiveState").is_ok_and(|s| s == "active")
}

fn pids(host: &Host, units: &[&str]) -> Result<BTreeMap<String, String>> {
    units.iter().map(|u| Ok((u.to_string(), prop(host, u, "MainPID")?))).collect()
}

/// Polls `check` every 250 ms until it holds or `limit` passes.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The daemon's journal (kapell-federation.service) since the daemon started.
fn daemon_journal(ctl: &Host) -> Result<String> {
    ctl.exec_ok(&["journalctl", "--no-pager", "-o", "cat", "-u", "kapell-federation.service"])
}

fn journal_with_id(ctl: &Host, id: &str) -> Result<String> {
    ctl.exec_ok(&["journalctl", "--no-pager", "-o", "cat", &format!("MESSAGE_ID={id}")])
}

const WEB: &[&str] = &["shop-web.service", "shop-cache.service", "agent-node.service"];

#[test]
fn federate_keeps_the_fleet_converged() -> Result<()> {
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let mut peers = vec![
        Host::builder().name("web1").net(&net, 11).ssh(&ssh).kapell(KAPELL).start()?,
        Host::builder().name("web2").net(&net, 12).ssh(&ssh).kapell(KAPELL).start()?,
        Host::builder().name("db1").net(&net, 13).ssh(&ssh).kapell(KAPELL).start()?,
    ];
    for p in &mut peers {
        p.wait_running()?;
        p.wait_ssh()?;
    }
    // known_hosts lists the peers by name; the controller's fleet.toml names them by address.
    let known = std::fs::read_to_string(ssh.known_hosts_path())?;
    ensure!(known.lines().count() >= 3, "known_hosts: {known}");
    let ctl = boot_controller(&net, &ssh)?;
    let footprint = peers.iter().fold(Footprint::new().net(&net).host(&ctl), Footprint::host);

    // Type=notify: start returns after the first full pass.
    let started = Instant::now();
    ctl.systemctl_ok(&["start", "kapell-federation.service"])?;
    eprintln!("timing: daemon ready (first pass, 3 hosts cold) after {:?}", started.elapsed());
    for unit in WEB {
        ensure!(active(&peers[0], unit) && active(&peers[1], unit), "{unit} not running on web hosts");
    }
    ensure!(active(&peers[2], "data-db.service") && active(&peers[2], "agent-node.service"));
    let status = prop(&ctl, "kapell-federation.service", "StatusText")?;
    ensure!(status.starts_with("3 hosts: 3 converged"), "STATUS= {status}");
    // The controller does not run the fleet's stacks itself.
    ensure!(prop(&ctl, "shop-web.service", "LoadState")? == "not-found", "the controller runs shop");

    // 1. Drift: stopped, edited, deleted and masked by hand; repaired within an interval or two.
    let web2_before = pids(&peers[1], WEB)?;
    peers[0].systemctl_ok(&["stop", "shop-web.service"])?;
    let cache = "/run/systemd/generator/shop-cache.service";
    let original = peers[0].exec_ok(&["cat", cache])?;
    peers[0].exec_ok(&["sh", "-c", &format!("echo '# edited by hand' >> {cache}")])?;
    peers[0].exec_ok(&["rm", "/run/systemd/generator/agent-node.service"])?;
    peers[2].systemctl_ok(&["mask", "data-db.service"])?;
    peers[2].systemctl_ok(&["stop", "data-db.service"])?;
    let took = eventually("drift repaired", Duration::from_secs(4 * INTERVAL_SECS + 10), || {
        if std::env::var_os("KAPELL_TEST_DEBUG").is_some() {
            eprintln!("{}", daemon_journal(&ctl)?);
        }
        Ok(active(&peers[0], "shop-web.service")
            && peers[0].exec_ok(&["cat", cache])? == original
            && peers[0].exec(&["test", "-f", "/run/systemd/generator/agent-node.service"])?.status.success()
            && active(&peers[2], "data-db.service")
            && prop(&peers[2], "data-db.service", "UnitFileState")? != "masked")
    })
    .map_err(|e| with_journal(&ctl, e))?;
    eprintln!("timing: drift detected and repaired in {took:?}");
    ensure!(pids(&peers[1], WEB)? == web2_before, "web2 was touched by the repair of web1");
    let repairs = journal_with_id(&ctl, "5b0f3a2e1c9d4f7a8e6b2d4c1a3f5e70")?;
    ensure!(repairs.contains("web1 converged") && repairs.contains("stopped outside kapell"), "{repairs}");
    ensure!(repairs.contains("unmasked"), "the unmask is not logged:\n{repairs}");

    // 2. Controller outage: nothing on the peers restarts.
    let before: Vec<_> = peers.iter().map(|p| pids(p, &["agent-node.service"])).collect::<Result<_>>()?;
    let web_before = pids(&peers[0], WEB)?;
    ctl.systemctl_ok(&["stop", "kapell-federation.service"])?;
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let after: Vec<_> = peers.iter().map(|p| pids(p, &["agent-node.service"])).collect::<Result<_>>()?;
    ensure!(
        before == after && pids(&peers[0], WEB)? == web_before,
        "a peer restarted units while the controller was away"
    );
    ctl.systemctl_ok(&["start", "kapell-federation.service"])?;

    // 3. A peer down for several intervals: backoff in the journal, converged when it returns.
    peers[1].poweroff()?;
    write(&ctl, "shop.toml", &shop(&sleep_argv(8_000_100)))?;
    eventually("web1 updated while web2 is down", Duration::from_secs(40), || {
        Ok(prop(&peers[0], "shop-web.service", "ExecStart")?.contains("8000100")
            && active(&peers[0], "shop-web.service"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    eventually("backoff for web2 in the journal", Duration::from_secs(40), || {
        Ok(daemon_journal(&ctl)?.matches("web2 is unreachable (next try in").count() >= 2)
    })
    .map_err(|e| with_journal(&ctl, e))?;
    let fleet_status = ctl.exec(&["kapell", "fleet", "status"])?;
    let text = String::from_utf8_lossy(&fleet_status.stdout);
    ensure!(text.contains("web2: unreachable") && text.contains("next try in"), "{text}");
    peers[1].start_again()?;
    let took = eventually("web2 converged after it returned", Duration::from_secs(90), || {
        Ok(prop(&peers[1], "shop-web.service", "ExecStart")?.contains("8000100")
            && active(&peers[1], "shop-web.service"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    eprintln!("timing: web2 converged {took:?} after it was back");

    // 4. A version that never becomes healthy: the first batch rolls back, web2 is never touched.
    eventually("no rollout in flight", Duration::from_secs(60), || Ok(!rollout_running(&ctl)?))
        .map_err(|e| with_journal(&ctl, e))?;
    let web2_pid = prop(&peers[1], "shop-web.service", "MainPID")?;
    write(&ctl, "shop.toml", &shop("[\"/bin/sh\", \"-c\", \"echo broken version; exit 3\"]"))?;
    eventually("the bad rollout rolled back", Duration::from_secs(60), || {
        Ok(journal_with_id(&ctl, "6d2f8a4c1e7b4f9a3c5e0b8d2a6f1c25")?.contains("web1 rolled back"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    let rolled = journal_with_id(&ctl, "6d2f8a4c1e7b4f9a3c5e0b8d2a6f1c25")?;
    ensure!(rolled.contains("shop-web.service"), "the failure does not name the unit: {rolled}");
    eventually("web1 back on the good version", Duration::from_secs(20), || {
        Ok(prop(&peers[0], "shop-web.service", "ExecStart")?.contains("8000100")
            && active(&peers[0], "shop-web.service"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    ensure!(prop(&peers[1], "shop-web.service", "MainPID")? == web2_pid, "web2 was changed by a failed rollout");
    ensure!(prop(&peers[1], "shop-web.service", "ExecStart")?.contains("8000100"));
    let fleet_status = String::from_utf8_lossy(&ctl.exec(&["kapell", "fleet", "status"])?.stdout).into_owned();
    ensure!(fleet_status.contains("stopped and rolled back"), "{fleet_status}");

    // 5. A good version: batch by batch, and at every moment at least one web host serves.
    write(&ctl, "shop.toml", &shop(&sleep_argv(8_000_200)))?;
    let mut samples = 0;
    eventually("the good version everywhere", Duration::from_secs(60), || {
        let serving = peers[..2].iter().filter(|p| active(p, "shop-web.service")).count();
        ensure!(serving >= 1, "no web host served during the rollout");
        samples += 1;
        Ok(peers[..2].iter().all(|p| prop(p, "shop-web.service", "ExecStart").is_ok_and(|e| e.contains("8000200"))))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    eprintln!("rollout sampled {samples} times, always >= 1 of 2 web hosts serving");

    // 6. The daemon killed in the middle of a rollout: systemd restarts it and it finishes.
    eventually("no rollout in flight", Duration::from_secs(60), || Ok(!rollout_running(&ctl)?))
        .map_err(|e| with_journal(&ctl, e))?;
    write(&ctl, "shop.toml", &shop(&sleep_argv(8_000_300)))?;
    eventually("a rollout in flight", Duration::from_secs(30), || rollout_running(&ctl))
        .map_err(|e| with_journal(&ctl, e))?;
    let pid = prop(&ctl, "kapell-federation.service", "MainPID")?;
    ctl.exec_ok(&["kill", "-KILL", &pid])?;
    eventually("the rollout completed after the restart", Duration::from_secs(90), || {
        let done =
            peers[..2].iter().all(|p| prop(p, "shop-web.service", "ExecStart").is_ok_and(|e| e.contains("8000300")));
        Ok(done && String::from_utf8_lossy(&ctl.exec(&["kapell", "fleet", "status"])?.stdout).contains("completed"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    ensure!(prop(&ctl, "kapell-federation.service", "NRestarts")? != "0", "the daemon was not restarted");

    // 7. A push that cuts db1's network: db1 reverts on its own and is reachable again.
    let cut = "[services.x]\nexec = [\"/bin/sh\", \"-c\", \"ip link set host0 down; exec sleep infinity\"]\n\
               placement = { hosts = [\"db1\"] }\n[services.x.systemd]\nService = { ExecStop = \"/sbin/ip link set host0 up\" }\n";
    write(&ctl, "cut.toml", cut)?;
    eventually("db1 cut off", Duration::from_secs(30), || Ok(active(&peers[2], "cut-x.service")))
        .map_err(|e| with_journal(&ctl, e))?;
    let took = eventually("db1 reverted on its own", Duration::from_secs(CONFIRM_SECS + 30), || {
        Ok(!active(&peers[2], "cut-x.service") && peers[2].ssh_ok(&["true"]).is_ok())
    })
    .map_err(|e| with_journal(&ctl, e))?;
    eprintln!("timing: db1 healed {took:?} after it was cut off (confirm_timeout {CONFIRM_SECS}s)");
    eventually("the controller reports it", Duration::from_secs(60), || {
        Ok(daemon_journal(&ctl)?.contains("db1 held back") || daemon_journal(&ctl)?.contains("rolled back"))
    })
    .map_err(|e| with_journal(&ctl, e))?;
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_SECS));
    ensure!(!active(&peers[2], "cut-x.service"), "the set that cut db1 off was pushed again");
    std::fs::remove_file(ctl.root().join("etc/kapell/cut.toml"))?;

    ctl.systemctl_ok(&["stop", "kapell-federation.service"])?;
    drop(ctl);
    drop(peers);
    drop(net);
    footprint.assert_gone()
}

/// `e` with the end of the daemon's journal, to see what it was doing.
fn with_journal(ctl: &Host, e: anyhow::Error) -> anyhow::Error {
    let journal = daemon_journal(ctl).unwrap_or_default();
    let tail: Vec<&str> = journal.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    e.context(format!("the daemon's journal ends with:\n{}", tail.join("\n")))
}

/// Is a rollout in flight, according to the controller's state?
fn rollout_running(ctl: &Host) -> Result<bool> {
    let path = ctl.root().join("var/lib/kapell/fleet/state.json");
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(false) };
    let state: serde_json::Value = serde_json::from_str(&text)?;
    Ok(state["rollout"]["outcome"].is_null() && state["rollout"]["in_flight"].as_array().is_some_and(|a| !a.is_empty()))
}
