//! The fleet, pushed: `kapell fleet plan/apply/status/promote` on this machine as the
//! controller, `kapell receive` on three booted systemd hosts (nspawn) with real sshd. The hosts
//! are booted once for all the tests of this file (see `support::scenarios`); each test starts
//! from peers that never received anything and a controller of its own.
//! Needs root and the packages of `.ci/deps`; nothing is mocked, nothing is skipped.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use support::fleet::{PEERS, boot_peers, forget_fleet, pids, prop};
use support::{Footprint, Host, Net, Run, Scenario, Ssh};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

fn main() {
    support::scenarios::run(
        &[
            Scenario { name: "plan_lists_the_units_and_apply_converges_every_host", test: plan_and_apply },
            Scenario { name: "a_second_apply_restarts_nothing", test: noop_apply },
            Scenario { name: "a_changed_service_restarts_only_its_unit", test: one_change },
            Scenario { name: "a_narrowed_placement_removes_the_service_from_that_host_only", test: narrowed },
            Scenario { name: "status_shows_every_host_as_a_table_and_as_json", test: status },
            Scenario { name: "a_set_edited_by_hand_is_replaced_only_with_force", test: edited_by_hand },
            Scenario { name: "a_dead_host_never_blocks_the_others", test: dead_host },
            Scenario { name: "a_reboot_brings_the_received_set_back", test: reboot },
            Scenario {
                name: "host_keys_are_verified_and_the_pinned_key_runs_only_kapell_receive",
                test: host_keys_are_verified,
            },
            Scenario { name: "killed_pushes_never_leave_a_mixed_set", test: killed_pushes },
            Scenario { name: "a_lost_confirmation_is_sent_by_the_next_apply", test: lost_confirmation },
            Scenario { name: "without_auto_revert_a_failed_batch_stays_as_it_is", test: left_as_is },
            Scenario { name: "a_failing_version_is_rolled_back_and_never_reaches_another_host", test: failing_version },
            Scenario {
                name: "a_native_version_failing_its_http_check_is_rolled_back_and_reaches_no_other_host",
                test: failing_http_check,
            },
            Scenario { name: "canaries_wait_for_fleet_promote", test: canaries_wait_for_promote },
            Scenario { name: "a_canary_pushed_alone_promotes_nothing", test: canary_alone },
            Scenario { name: "canaries_are_promoted_automatically_once_healthy", test: canaries_auto_promote },
            Scenario { name: "a_failing_canary_touches_nobody_else", test: failing_canary },
            Scenario { name: "a_host_a_rollout_cannot_reach_fails_nothing", test: unreachable_in_a_rollout },
            Scenario { name: "a_canary_the_push_cannot_reach_holds_the_others", test: unreachable_canary },
            Scenario { name: "a_push_that_loses_its_host_fails_the_batch", test: lost_host },
            Scenario {
                name: "a_failing_replicated_version_is_judged_by_its_instances_and_rolled_back",
                test: failing_replicas,
            },
            Scenario { name: "a_rollout_whose_hosts_are_all_canaries_completes", test: only_canaries },
            Scenario { name: "each_changed_service_has_its_own_canary", test: canaries_per_service },
            Scenario { name: "a_batch_that_fails_takes_the_earlier_batches_back_too", test: later_batch_fails },
            Scenario { name: "a_host_that_joins_gets_no_failed_desired_state", test: joining_host },
            Scenario { name: "a_failed_desired_state_reaches_no_host_by_a_new_placement", test: placed_anew },
            Scenario { name: "a_host_whose_rollback_fails_is_held_and_never_confirmed", test: failed_rollback },
            Scenario { name: "scaling_a_dependency_restarts_none_of_its_dependents", test: scaled_dependency },
            Scenario { name: "a_slow_host_of_a_batch_reverts_no_quick_one", test: slow_host_in_a_batch },
            Scenario { name: "a_rollout_retry_overwrites_no_set_edited_by_hand", test: retry_over_a_hand_edit },
        ],
        Rig::boot,
        Rig::reset,
        Rig::teardown,
    )
}

/// Three peers (web1, web2 with role=web; db1 with role=db) on a private net, booted once.
struct Rig {
    hosts: Vec<Host>,
    ssh: Ssh,
    net: Net,
    footprint: Footprint,
    /// root's authorized_keys as booted (a test pins the key; the next gets it back).
    authorized_keys: String,
}

impl Rig {
    fn boot() -> Result<Rig> {
        support::require_root()?;
        let net = Net::new()?;
        let ssh = Ssh::new()?;
        let hosts = boot_peers(&net, &ssh, Path::new(KAPELL))?;
        let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
        let authorized_keys = std::fs::read_to_string(hosts[0].root().join("root/.ssh/authorized_keys"))?;
        Ok(Rig { hosts, ssh, net, footprint, authorized_keys })
    }

    fn reset(&mut self) -> Result<()> {
        for host in &mut self.hosts {
            std::fs::write(host.root().join("root/.ssh/authorized_keys"), &self.authorized_keys)?;
            let sshd_policy = host.root().join(SSHD_POLICY.trim_start_matches('/'));
            if sshd_policy.exists() {
                std::fs::remove_file(sshd_policy)?;
                host.systemctl_ok(&["reload", "ssh.service"])?;
            }
            forget_fleet(host)?;
        }
        Ok(())
    }

    fn teardown(self) -> Result<()> {
        let Rig { hosts, ssh, net, footprint, .. } = self;
        drop(hosts);
        drop(ssh);
        drop(net);
        footprint.assert_gone()
    }

    /// A controller whose stacks are applied and every host converged: `shop.web` runs
    /// `sleep 7000000`.
    fn converged(&self, rollout: &str) -> Result<Controller> {
        let c = Controller::new(&self.ssh, rollout)?;
        stacks(&c, "7000000", None)?;
        let first = c.expect(&["fleet", "apply"], 0)?;
        for host in PEERS {
            ensure!(first.stdout.lines().any(|l| l.starts_with(host.0) && l.contains("converged")), "{first}");
        }
        Ok(c)
    }
}

/// A controller: a config directory with `fleet.toml` and stacks, and its own runtime and state
/// directories, whose master connections (kapell's ControlMaster sockets) are closed on drop.
struct Controller {
    dir: tempfile::TempDir,
    runtime: tempfile::TempDir,
    ssh_config: PathBuf,
}

/// Short healthy times keep rolling updates quick in tests.
const QUICK: &str = "min_healthy_time = \"1s\"\n";

impl Controller {
    /// `rollout`: the body of `[rollout]`.
    fn new(ssh: &Ssh, rollout: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
        let mut fleet = format!(
            "[defaults]\nssh_config = \"{}\"\nparallel = 16\n\n[rollout]\n{rollout}\n",
            ssh.config_path().display()
        );
        for (name, _, role) in PEERS {
            fleet.push_str(&format!("[hosts.{name}]\naddress = \"{name}\"\nlabels = {{ role = \"{role}\" }}\n\n"));
        }
        std::fs::write(dir.path().join("fleet.toml"), fleet)?;
        Ok(Controller { dir, runtime, ssh_config: ssh.config_path().to_path_buf() })
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        std::fs::write(self.dir.path().join(name), text).with_context(|| format!("cannot write {name}"))
    }

    fn kapell(&self, args: &[&str]) -> Result<Run> {
        Run::of(&mut self.command(args))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KAPELL);
        cmd.env("KAPELL_CONFIG_DIR", self.dir.path())
            .env("KAPELL_RUNTIME_DIR", self.runtime.path())
            .env("KAPELL_STATE_DIR", self.runtime.path().join("state"))
            .args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn expect(&self, args: &[&str], code: i32) -> Result<Run> {
        let run = self.kapell(args)?;
        ensure!(run.code == Some(code), "`kapell {}` should exit {code}:\n{run}", args.join(" "));
        Ok(run)
    }

    /// The desired set hash of every host, from `fleet plan --json`.
    fn desired(&self) -> Result<BTreeMap<String, String>> {
        let plan = self.kapell(&["fleet", "plan", "--json"])?;
        let json: serde_json::Value = serde_json::from_str(&plan.stdout).with_context(|| format!("{plan}"))?;
        let mut out = BTreeMap::new();
        for host in json.as_array().context("plan is an array")? {
            let name = host["host"].as_str().unwrap_or_default().to_string();
            out.insert(name, host["desired"].as_str().unwrap_or_default().to_string());
        }
        Ok(out)
    }

    /// `fleet status --json`.
    fn status_json(&self) -> Result<serde_json::Value> {
        let status = self.kapell(&["fleet", "status", "--json"])?;
        serde_json::from_str(&status.stdout).with_context(|| format!("{status}"))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.close_masters();
    }
}

impl Controller {
    /// Closes kapell's master connections (ControlPersist) to our hosts: the next request
    /// authenticates again (and meets what `authorized_keys` says now).
    fn close_masters(&self) {
        for (host, _, _) in PEERS {
            let _ = Command::new("ssh")
                .arg("-F")
                .arg(&self.ssh_config)
                .arg("-o")
                .arg(format!("ControlPath={}/ssh/%C", self.runtime.path().display()))
                .args(["-O", "exit", host])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `shop.web` on role=web, `data.db` on db1, `agent.node` everywhere (or where `agent_hosts` says).
fn stacks(c: &Controller, web_arg: &str, agent_hosts: Option<&str>) -> Result<()> {
    c.write(
        "shop.toml",
        &format!(
            "[services.web]\nexec = [\"/bin/sleep\", \"{web_arg}\"]\nplacement = {{ labels = {{ role = \"web\" }} }}\n\n\
             [services.cache]\nexec = [\"/bin/sleep\", \"7000001\"]\nplacement = {{ labels = {{ role = \"web\" }} }}\n"
        ),
    )?;
    c.write("data.toml", "[services.db]\nexec = [\"/bin/sleep\", \"7000002\"]\nplacement = { hosts = [\"db1\"] }\n")?;
    let placement = match agent_hosts {
        Some(hosts) => format!("{{ hosts = {hosts} }}"),
        None => "{ global = true }".to_string(),
    };
    c.write("agent.toml", &format!("[services.node]\nexec = [\"/bin/sleep\", \"7000003\"]\nplacement = {placement}\n"))
}

const WEB_UNITS: &[&str] =
    &["agent.target", "shop.target", "shop-web.service", "shop-cache.service", "agent-node.service"];
const DB_UNITS: &[&str] = &["agent.target", "data.target", "data-db.service", "agent-node.service"];

fn units_of(host: &Host) -> &'static [&'static str] {
    if host.name() == "db1" { DB_UNITS } else { WEB_UNITS }
}

/// The main PIDs of every service on every host, by host.
fn all_pids(hosts: &[Host]) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    hosts.iter().map(|h| Ok((h.name().to_string(), pids(h, units_of(h))?))).collect()
}

fn plan_and_apply(rig: &mut Rig) -> Result<()> {
    let c = Controller::new(&rig.ssh, QUICK)?;
    stacks(&c, "7000000", None)?;
    let plan = c.expect(&["fleet", "plan"], 0)?;
    ensure!(plan.stdout.contains("web1 (web1): 5 to add, 0 to change, 0 to remove"), "{plan}");
    ensure!(plan.stdout.contains("db1 (db1): 4 to add"), "{plan}");
    ensure!(plan.stdout.contains("add     shop-web.service"), "{plan}");
    eprintln!("$ kapell fleet plan\n{}", plan.stdout);
    let first = c.expect(&["fleet", "apply"], 0)?;
    eprintln!("$ kapell fleet apply\n{}", first.stdout);
    for host in &rig.hosts {
        ensure!(first.stdout.lines().any(|l| l.starts_with(host.name()) && l.contains("converged")), "{first}");
    }
    all_pids(&rig.hosts)?;
    ensure!(prop(&rig.hosts[2], "shop-web.service", "LoadState")? == "not-found", "db1 must not run shop");
    eprintln!("timing: fleet apply, 3 hosts cold {:?}", first.took);
    Ok(())
}

/// Hosts that run their desired sets are asked to repair them by hash, not sent the set again:
/// a few hundred bytes each, and drift is still repaired that way.
fn noop_apply(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let before = all_pids(&rig.hosts)?;
    let debug = |run: Run| -> Result<Run> {
        for host in &rig.hosts {
            let line = run.stderr.lines().find(|l| l.starts_with(&format!("debug: {}: ", host.name())));
            let bytes = line.and_then(|l| l.split(" request of ").nth(1)?.split(' ').next()?.parse::<usize>().ok());
            ensure!(
                line.is_some_and(|l| l.contains(": repair request of ")) && bytes.is_some_and(|b| b < 1024),
                "{}: not a small repair request:\n{run}",
                host.name()
            );
        }
        ensure!(!run.stderr.contains("install request"), "a set was sent again:\n{run}");
        Ok(run)
    };
    let noop = debug(Run::of(c.command(&["fleet", "apply"]).env("KAPELL_LOG", "debug"))?)?;
    ensure!(noop.code == Some(0) && noop.stdout.matches("up to date").count() >= 3, "{noop}");
    let after = all_pids(&rig.hosts)?;
    ensure!(before == after, "a no-op apply restarted units: {before:?} -> {after:?}");
    eprintln!("timing: fleet apply, 3 hosts no-op {:?}", noop.took);

    // A unit stopped by hand on web1: the repair starts it, and touches nothing else.
    rig.hosts[0].systemctl_ok(&["stop", "shop-cache.service"])?;
    let repair = debug(Run::of(c.command(&["fleet", "apply"]).env("KAPELL_LOG", "debug"))?)?;
    ensure!(repair.code == Some(0), "{repair}");
    ensure!(repair.stdout.lines().any(|l| l.starts_with("web1") && l.contains("converged")), "{repair}");
    ensure!(prop(&rig.hosts[0], "shop-cache.service", "ActiveState")? == "active", "not repaired:\n{repair}");
    let now = all_pids(&rig.hosts)?;
    for (host, units) in &now {
        for (unit, pid) in units {
            let moved = before[host][unit] != *pid;
            ensure!(
                moved == (host == "web1" && unit == "shop-cache.service"),
                "{host}: {unit} moved: {moved}\n{repair}"
            );
        }
    }
    Ok(())
}

/// An sshd configuration a test adds to a peer (removed by [`Rig::reset`]).
const SSHD_POLICY: &str = "/etc/ssh/sshd_config.d/kapell-test.conf";

/// The key exchange each of `host`'s sshd connections since `since` (seconds since the epoch)
/// used, from its journal (sshd logs it at `LogLevel DEBUG`).
fn sshd_key_exchanges(host: &Host, since: &str) -> Result<Vec<String>> {
    // By identifier, not `-u`: a connection's sshd may be gone before journald looks up its
    // cgroup (OpenSSH 9.8 and later log as `sshd-session`).
    let journal =
        host.exec_ok(&["journalctl", "-q", "-o", "cat", "-t", "sshd", "-t", "sshd-session", "--since", since])?;
    // `debug1: kex: algorithm: curve25519-sha256 [preauth]`
    let kex = |l: &str| Some(l.split("kex: algorithm: ").nth(1)?.split_whitespace().next()?.to_string());
    Ok(journal.lines().filter_map(kex).collect())
}

/// One service changed: only its unit restarts, on the hosts that run it. On the way, the
/// confirmation's new connection: it offers the fast key exchange first where sshd takes it
/// (web2), and still gets through to an sshd that accepts only OpenSSH 9.2's default (web1).
fn one_change(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let sntrup_only = "LogLevel DEBUG\nKexAlgorithms sntrup761x25519-sha512@openssh.com\n";
    for (host, policy) in [(&rig.hosts[0], sntrup_only), (&rig.hosts[1], "LogLevel DEBUG\n")] {
        std::fs::write(host.root().join(SSHD_POLICY.trim_start_matches('/')), policy)?;
        host.systemctl_ok(&["reload", "ssh.service"])?;
    }
    let since = format!("@{}", rig.hosts[0].exec_ok(&["date", "+%s"])?.trim());
    let before = all_pids(&rig.hosts)?;
    stacks(&c, "7000099", None)?;
    let plan = c.expect(&["fleet", "plan"], 0)?;
    ensure!(
        plan.stdout.contains("change  shop-web.service") && plan.stdout.contains("+ExecStart=/bin/sleep 7000099"),
        "{plan}"
    );
    ensure!(plan.stdout.contains("db1 (db1): up to date"), "{plan}");
    let change = Run::of(c.command(&["fleet", "apply"]).env("KAPELL_LOG", "debug"))?;
    ensure!(change.code == Some(0), "{change}");
    eprintln!("$ kapell fleet plan (one service changed)\n{}\n$ kapell fleet apply\n{}", plan.stdout, change.stdout);
    // The fleet's catalog did not change, and both web hosts have it: it is left out.
    for web in ["web1", "web2"] {
        let install = format!("debug: {web}: install request of ");
        let line = change.stderr.lines().find(|l| l.starts_with(&install)).unwrap_or_default();
        ensure!(line.contains(" bytes without the catalog"), "{web}: the catalog was sent again:\n{change}");
    }
    let now = all_pids(&rig.hosts)?;
    for host in &rig.hosts {
        for unit in units_of(host).iter().filter(|u| u.ends_with(".service")) {
            let moved = before[host.name()][*unit] != now[host.name()][*unit];
            ensure!(moved == (*unit == "shop-web.service"), "{}: {unit} restarted: {moved}\n{change}", host.name());
        }
    }
    // Both web hosts were changed and confirmed (exit 0 above); the master connections were
    // open before, so the new connections since are the confirmations (and `fleet plan`'s
    // none: it reuses the masters).
    // sshd's lines reach the journal on journald's time.
    let default = Command::new("ssh").args(["-G", "-F", "/dev/null", "kapell.invalid"]).output()?;
    let sntrup_first = String::from_utf8_lossy(&default.stdout).contains("kexalgorithms sntrup761x25519");
    let (mut web1, mut web2) = (Vec::new(), Vec::new());
    let seen =
        support::eventually("the confirmations' key exchanges in sshd's journal", Duration::from_secs(10), || {
            (web1, web2) = (sshd_key_exchanges(&rig.hosts[0], &since)?, sshd_key_exchanges(&rig.hosts[1], &since)?);
            Ok(!web1.is_empty() && (!sntrup_first || !web2.is_empty()))
        });
    seen.with_context(|| format!("web1: {web1:?}, web2: {web2:?}\n{change}"))?;
    ensure!(web1.iter().all(|k| k.starts_with("sntrup761x25519")), "web1: {web1:?}\n{change}");
    if sntrup_first {
        ensure!(web2.iter().any(|k| k == "curve25519-sha256"), "web2: {web2:?}\n{change}");
    }
    Ok(())
}

/// Placement narrowed: agent leaves web2 only.
fn narrowed(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let before = all_pids(&rig.hosts)?;
    stacks(&c, "7000000", Some("[\"web1\", \"db1\"]"))?;
    let narrowed = Run::of(c.command(&["fleet", "apply"]).env("KAPELL_LOG", "debug"))?;
    ensure!(narrowed.code == Some(0), "{narrowed}");
    // The catalog changed (agent left web2): every host gets the new one, none is asked to
    // keep its own.
    ensure!(
        narrowed.stderr.matches(": install request of ").count() == 3
            && !narrowed.stderr.contains("without the catalog"),
        "{narrowed}"
    );
    ensure!(prop(&rig.hosts[1], "agent-node.service", "LoadState")? == "not-found", "{narrowed}");
    ensure!(prop(&rig.hosts[1], "agent-node.service", "ActiveState")? == "inactive", "{narrowed}");
    ensure!(pids(&rig.hosts[0], WEB_UNITS)? == before["web1"], "web1 was touched:\n{narrowed}");
    ensure!(pids(&rig.hosts[2], DB_UNITS)? == before["db1"], "db1 was touched:\n{narrowed}");
    Ok(())
}

/// Status: every host's services, as JSON and as a table; on a peer, `kapell status` shows the
/// received services, marked as the fleet's.
fn status(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let json = c.status_json()?;
    let web1 =
        json["hosts"].as_array().and_then(|a| a.iter().find(|h| h["host"] == "web1")).context("web1 in status")?;
    ensure!(web1["drifted"] == false, "{json}");
    ensure!(
        web1["units"].as_array().is_some_and(|u| u.iter().any(|u| u["service"] == "web" && u["active"] == "active")),
        "{json}"
    );
    let table = c.expect(&["fleet", "status"], 0)?;
    eprintln!("$ kapell fleet status\n{}", table.stdout);
    ensure!(table.stdout.lines().next().is_some_and(|l| l.starts_with("HOST") && l.contains("GOAL")), "{table}");
    let peer = rig.hosts[0].exec_ok(&["kapell", "status"])?;
    ensure!(
        peer.lines().any(|l| l.starts_with("shop (fleet)") && l.contains("shop-web.service") && l.contains("active")),
        "{peer}"
    );
    Ok(())
}

/// A set edited by hand on a peer is one this controller did not push: reported, left alone,
/// and replaced only with --force.
fn edited_by_hand(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let cache = rig.hosts[1].root().join("etc/kapell/received/current/shop-cache.service");
    let text = std::fs::read_to_string(&cache)?;
    std::fs::write(&cache, format!("{text}# edited on web2 by hand\n"))?;
    let refused = c.expect(&["fleet", "apply"], 3)?;
    ensure!(
        refused.stdout.contains("web2: this host runs set") && refused.stdout.contains("did not push"),
        "{refused}"
    );
    ensure!(std::fs::read_to_string(&cache)?.contains("edited on web2 by hand"), "the edited set was overwritten");
    // A change of shop.web rolls out to web1 and web2: web2 is held back on its own, before any
    // push, and its edit is no failure of the fleet's desired state (web1 gets the change).
    stacks(&c, "7000077", None)?;
    let rolled = c.expect(&["fleet", "apply"], 5)?;
    ensure!(rolled.stdout.lines().any(|l| l.starts_with("web2: held back") && l.contains("did not push")), "{rolled}");
    ensure!(prop(&rig.hosts[0], "shop-web.service", "ExecStart")?.contains("7000077"), "{rolled}");
    ensure!(rollout_of(&c)?["state"] != "failed", "one host's edit failed the desired state:\n{rolled}");
    ensure!(std::fs::read_to_string(&cache)?.contains("edited on web2 by hand"), "the edited set was overwritten");
    let forced = c.expect(&["fleet", "apply", "--force"], 0)?;
    ensure!(!std::fs::read_to_string(&cache)?.contains("by hand"), "--force did not replace the set:\n{forced}");
    Ok(())
}

/// web2 powered off during an apply: the others converge in their own time, the report names
/// web2 and why, the exit status is 3; once back, the next apply converges it.
fn dead_host(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    rig.hosts[1].poweroff()?;
    stacks(&c, "7000123", Some("[\"web1\", \"db1\"]"))?;
    let partial = c.expect(&["fleet", "apply"], 3)?;
    let row = partial.stdout.lines().find(|l| l.starts_with("web2 ") && l.contains("FAILED")).context("web2 row")?;
    ensure!(partial.stdout.contains("web2: cannot reach web2 over ssh"), "{row}\n{partial}");
    ensure!(partial.stdout.lines().any(|l| l.starts_with("web1 ") && l.contains("converged")), "{partial}");
    ensure!(partial.took < Duration::from_secs(15), "a dead host slowed the apply down: {partial}");
    rig.hosts[1].start_again()?;
    rig.hosts[1].wait_ssh()?;
    let back = c.expect(&["fleet", "apply"], 0)?;
    ensure!(back.stdout.lines().any(|l| l.starts_with("web2 ") && l.contains("converged")), "{back}");
    ensure!(prop(&rig.hosts[1], "shop-web.service", "ExecStart")?.contains("7000123"), "web2 runs the old web");
    Ok(())
}

/// A reboot brings the received set up with no controller involved.
fn reboot(rig: &mut Rig) -> Result<()> {
    let _c = rig.converged(QUICK)?;
    rig.hosts[0].reboot()?;
    pids(&rig.hosts[0], &["shop-web.service", "shop-cache.service", "agent-node.service"])?;
    ensure!(rig.hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])?.starts_with('g'));
    Ok(())
}

/// Keys: an unknown and a changed host key are refused with a clear message; the forced-command
/// pin lets `kapell receive` through and nothing else; a set that would shadow `ssh.service` is
/// refused by the peer and nothing changes.
fn host_keys_are_verified(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let (hosts, ssh) = (&rig.hosts, &rig.ssh);

    // Unknown key: a known_hosts without web1.
    let known = std::fs::read_to_string(ssh.known_hosts_path())?;
    let without: String = known.lines().filter(|l| !l.contains("web1")).map(|l| format!("{l}\n")).collect();
    let unknown = c.dir.path().join("known_unknown");
    std::fs::write(&unknown, without)?;
    let refused = with_known_hosts(&c, ssh, &unknown)?;
    ensure!(refused.code == Some(3), "{refused}");
    ensure!(refused.stdout.contains("the host key of web1 is not in known_hosts: refusing to connect"), "{refused}");

    // Changed key: web1's entry replaced by another key.
    let other = c.dir.path().join("other_key");
    support::run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other))?;
    let other_pub = std::fs::read_to_string(other.with_extension("pub"))?;
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let changed: String = known
        .lines()
        .map(|l| {
            if l.contains("web1") {
                format!("{} {}\n", l.split_whitespace().next().unwrap_or(""), fields.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let changed_path = c.dir.path().join("known_changed");
    std::fs::write(&changed_path, changed)?;
    let refused = with_known_hosts(&c, ssh, &changed_path)?;
    ensure!(refused.code == Some(3), "{refused}");
    ensure!(refused.stdout.contains("the host key of web1 has CHANGED"), "{refused}");
    // The other hosts are not held up by web1's refusal.
    ensure!(refused.stdout.lines().any(|l| l.starts_with("db1 ") && !l.contains("FAILED")), "{refused}");

    // The right keys in a file whose path has blanks (ssh splits an unquoted UserKnownHostsFile
    // into several files and then knows no key at all).
    let blanks = c.dir.path().join("known hosts with blanks");
    std::fs::write(&blanks, &known)?;
    let accepted = with_known_hosts(&c, ssh, &blanks)?;
    ensure!(accepted.code == Some(0), "{accepted}");

    // Without the pin, the same key may forward ports (so the refusal below is the pin's doing).
    let open =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "-W", "127.0.0.1:22"]).stdin(Stdio::null()))?;
    ensure!(String::from_utf8_lossy(&open.stdout).starts_with("SSH-2.0"), "forwarding before the pin failed");

    // The pin: db1 accepts our key only for `kapell receive`.
    let pubkey = std::fs::read_to_string(ssh.key_path().with_extension("pub"))?;
    let pinned = format!("restrict,command=\"kapell receive\" {pubkey}");
    std::fs::write(hosts[2].root().join("root/.ssh/authorized_keys"), pinned)?;
    let sneaky =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "cat", "/etc/hostname"]).stdin(Stdio::null()))?;
    let said = String::from_utf8_lossy(&sneaky.stdout);
    ensure!(!said.contains("db1\n") || said.contains("error"), "the pinned key ran cat: {said}");
    ensure!(said.contains("this key may only run `kapell receive`"), "{said}");
    let forward =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "-W", "127.0.0.1:22"]).stdin(Stdio::null()))?;
    ensure!(!forward.status.success(), "port forwarding got through the pin");
    let said = String::from_utf8_lossy(&forward.stderr);
    ensure!(
        said.contains("prohibited") || said.contains("forwarding failed"),
        "{}",
        String::from_utf8_lossy(&forward.stderr)
    );
    // kapell's own requests still work through the pin.
    stacks(&c, "7000001", None)?;
    c.expect(&["fleet", "apply", "--on", "db1"], 0)?;

    // A set that would shadow ssh.service: refused, nothing changes.
    let unit = "[Unit]\nX-Kapell-Stack=evil\nX-Kapell-Service=ssh\n[Service]\nExecStart=/bin/true\n";
    let sum = sha256_hex(unit.as_bytes());
    let mut set =
        serde_json::json!({ "files": { "ssh.service": { "kind": "unit", "text": unit, "sha256": sum } }, "hash": "" });
    let hash = kapell::fleet::protocol::HostSet::new(serde_json::from_value(set["files"].clone())?, None, "").hash;
    set["hash"] = serde_json::Value::String(hash);
    let request = serde_json::json!({ "version": kapell::fleet::protocol::VERSION, "request": "install", "set": set })
        .to_string();
    let before = hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])?;
    let mut child = ssh
        .command("web1")
        .args(["-o", "ControlMaster=no", "kapell", "receive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, request.as_bytes())?;
    let out = child.wait_with_output()?;
    let reply = String::from_utf8_lossy(&out.stdout);
    ensure!(
        reply.contains("ssh.service would shadow /lib/systemd/system/ssh.service")
            || reply.contains("ssh.service would shadow /usr/lib/systemd/system/ssh.service"),
        "{reply}"
    );
    ensure!(hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])? == before, "the current set changed");
    ensure!(prop(&hosts[0], "ssh.service", "ActiveState")? == "active", "sshd was touched");
    // Only a `status` reply carries the set's files; the reply to an install that changes
    // nothing carries its hash and the units' states, not the set again.
    let receive = |request: &serde_json::Value| -> Result<serde_json::Value> {
        let mut child =
            ssh.command("web1").args(["kapell", "receive"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, request.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&child.wait_with_output()?.stdout)?)
    };
    let status = receive(&serde_json::json!({ "version": 1, "request": "status" }))?;
    let files = status["files"].as_object().context("files")?.clone();
    ensure!(!files.is_empty() && status["current"].as_str().is_some_and(|h| !h.is_empty()), "{status}");
    // The discovery catalog and the host's name in it are part of the set (and of its hash).
    let set = serde_json::json!({
        "files": files, "catalog": status["catalog"], "host": status["set_host"], "hash": status["current"]
    });
    let noop = receive(&serde_json::json!({ "version": 1, "request": "install", "set": set, "force": true }))?;
    ensure!(noop["error"].is_null() && noop["changed"] == false && noop["current"] == status["current"], "{noop}");
    ensure!(noop["files"].as_object().is_some_and(|f| f.is_empty()), "the no-op reply repeated the set: {noop}");
    ensure!(noop["units"].as_array().is_some_and(|u| !u.is_empty()), "{noop}");

    Ok(())
}

/// The pusher and the peers' `kapell receive` killed with SIGKILL at random moments, 50 times:
/// every peer always holds a complete old or new set (its files hash to one of the sets pushed),
/// and the next apply converges every host.
fn killed_pushes(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    let hosts = &rig.hosts;
    let mut known: BTreeMap<String, Vec<String>> = c.desired()?.into_iter().map(|(h, s)| (h, vec![s])).collect();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut kills = 0;
    for round in 0..50 {
        stacks(&c, &format!("{}", 7100000 + round), None)?;
        for (host, hash) in c.desired()? {
            known.entry(host).or_default().push(hash);
        }
        let mut child = c.command(&["fleet", "apply"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        std::thread::sleep(Duration::from_millis(next() % 900));
        if round % 2 == 1 {
            // Kill a peer's receive (by the PID its lock records) as well as the pusher.
            let host = &hosts[(next() % 3) as usize];
            // /run is the host's own tmpfs: read inside the host. No lock file yet, no receive yet.
            if let Ok(text) = host.exec_ok(&["cat", "/run/kapell/lock"])
                && let Some(pid) = text.strip_prefix("PID ").and_then(|t| t.split_whitespace().next())
            {
                let _ = host.exec(&["kill", "-KILL", pid]);
                kills += 1;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        for host in hosts {
            let dir = host.root().join("etc/kapell/received/current");
            let Ok(set) = kapell::fleet::peer::generations::read_set(&dir) else { continue };
            ensure!(
                known[host.name()].contains(&set.hash),
                "round {round}: {} holds a set that was never pushed (a mix?)",
                host.name()
            );
        }
    }
    eprintln!("killed pushes: {kills} receives killed by PID in 25 rounds");
    let last = c.expect(&["fleet", "apply"], 0)?;
    for host in hosts {
        pids(host, units_of(host))?;
        ensure!(prop(host, "agent-node.service", "ActiveState")? == "active", "{last}");
    }
    let noop = c.expect(&["fleet", "apply"], 0)?;
    ensure!(noop.stdout.matches("up to date").count() >= 3, "not converged after the kills:\n{noop}");
    Ok(())
}

/// A push whose confirmation never got through (here: db1 refuses new connections for a
/// moment, while the apply's master connection stays up) is confirmed by the next apply that
/// finds it still pending, instead of being left to revert on a host the controller reaches.
fn lost_confirmation(rig: &mut Rig) -> Result<()> {
    let c = Controller::new(&rig.ssh, QUICK)?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?;
    c.write("fleet.toml", &fleet.replace("[defaults]\n", "[defaults]\nconfirm_timeout = \"4s\"\n"))?;
    stacks(&c, "7000000", None)?;
    c.expect(&["fleet", "apply"], 0)?;
    let db1 = &rig.hosts[2];
    let pending = db1.root().join("etc/kapell/received/pending.json");
    c.write("data.toml", "[services.db]\nexec = [\"/bin/sleep\", \"7000502\"]\nplacement = { hosts = [\"db1\"] }\n")?;
    // ssh.service stops only its listener (KillMode=process): the master connection stays.
    db1.systemctl_ok(&["stop", "ssh.service"])?;
    let first = c.kapell(&["fleet", "apply"]);
    db1.systemctl_ok(&["start", "ssh.service"])?;
    let first = first?;
    ensure!(first.code == Some(3), "the apply should fail on db1:\n{first}");
    ensure!(format!("{first}").contains("the confirmation over a new connection failed"), "{first}");
    ensure!(pending.exists(), "db1 installed nothing pending:\n{first}");
    let second = c.expect(&["fleet", "apply"], 0)?;
    ensure!(!pending.exists(), "the next apply left db1's set unconfirmed:\n{second}");
    // Past the window: the set stays, and nothing is held back.
    std::thread::sleep(Duration::from_secs(6));
    ensure!(prop(db1, "data-db.service", "ExecStart")?.contains("7000502"), "db1 reverted a confirmed set");
    let noop = c.expect(&["fleet", "apply"], 0)?;
    ensure!(noop.stdout.matches("up to date").count() >= 3, "not every host is up to date:\n{noop}");
    Ok(())
}

/// `auto_revert = false`: the host of the failed batch keeps the failed version past its
/// confirm window (the controller confirms it), and nobody else gets it.
fn left_as_is(rig: &mut Rig) -> Result<()> {
    let c = Controller::new(&rig.ssh, &format!("{ROLLING}auto_revert = false\n"))?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?;
    c.write("fleet.toml", &fleet.replace("[defaults]\n", "[defaults]\nconfirm_timeout = \"3s\"\n"))?;
    stacks(&c, "7000000", None)?;
    c.expect(&["fleet", "apply"], 0)?;
    agent(&c, BROKEN)?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    let left: Vec<&Host> = rig
        .hosts
        .iter()
        .filter(|h| {
            failed.stdout.lines().any(|l| l.starts_with(h.name()) && l.contains("left as is (auto_revert = false)"))
        })
        .collect();
    ensure!(left.len() == 1, "one host should be left as is:\n{failed}");
    // Past the window (healthy_deadline 6 s + confirm_timeout 3 s after the push).
    std::thread::sleep(Duration::from_secs(10));
    let host = left[0];
    ensure!(prop(host, "agent-node.service", "ExecStart")?.contains("broken version"), "{} reverted", host.name());
    ensure!(!host.root().join("etc/kapell/received/pending.json").exists(), "{} still pending", host.name());
    let others: Vec<&str> = PEERS.iter().map(|p| p.0).filter(|n| *n != host.name()).collect();
    ensure!(agent_runs(rig, &others, "7000003")?, "the failed version reached another host:\n{failed}");
    agent(&c, &sleep_argv(7000033))?;
    let fixed = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000033")?, "{fixed}");
    Ok(())
}

/// `kapell fleet apply` with a known_hosts of its own and a fresh runtime dir (no master
/// connection to reuse, so the key is checked).
fn with_known_hosts(c: &Controller, ssh: &Ssh, known: &Path) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?
        .replace("[defaults]\n", &format!("[defaults]\nknown_hosts = \"{}\"\n", known.display()));
    std::fs::write(dir.path().join("fleet.toml"), fleet)?;
    for entry in std::fs::read_dir(c.dir.path())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && name != "fleet.toml" {
            std::fs::copy(entry.path(), dir.path().join(&name))?;
        }
    }
    let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
    // The test ssh config names its own known_hosts; ours must win, so drop that line.
    let config = std::fs::read_to_string(ssh.config_path())?
        .lines()
        .filter(|l| !l.contains("UserKnownHostsFile"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let config_path = dir.path().join("ssh_config");
    std::fs::write(&config_path, config)?;
    let fleet = std::fs::read_to_string(dir.path().join("fleet.toml"))?
        .replace(&ssh.config_path().display().to_string(), &config_path.display().to_string());
    std::fs::write(dir.path().join("fleet.toml"), fleet)?;
    let run = Run::of(
        Command::new(KAPELL)
            .env("KAPELL_CONFIG_DIR", dir.path())
            .env("KAPELL_RUNTIME_DIR", runtime.path())
            .env("KAPELL_STATE_DIR", c.runtime.path().join("state"))
            .args(["fleet", "apply"]),
    )?;
    for host in ["web1", "web2", "db1"] {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(&config_path)
            .arg("-o")
            .arg(format!("ControlPath={}/ssh/%C", runtime.path().display()))
            .args(["-O", "exit", host])
            .stderr(Stdio::null())
            .status();
    }
    Ok(run)
}

fn sha256_hex(bytes: &[u8]) -> String {
    kapell::fleet::protocol::sha256(bytes)
}

/// Rollouts one host at a time, quick to judge: healthy after 1 s, failed after 6 s.
const ROLLING: &str = "max_parallel = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"6s\"\n";
/// A version of `agent.node` that exits at once (systemd restarts it, so it never stays up).
const BROKEN: &str = "[\"/bin/sh\", \"-c\", \"echo broken version; exit 3\"]";

/// `agent.node` (on every host) running `argv`, restarted by systemd whenever it exits.
fn agent(c: &Controller, argv: &str) -> Result<()> {
    c.write(
        "agent.toml",
        &format!(
            "[services.node]\nexec = {argv}\nrestart = \"always\"\nrestart_delay = \"500ms\"\n\
             placement = {{ global = true }}\n"
        ),
    )
}

fn sleep_argv(n: u64) -> String {
    format!("[\"/bin/sleep\", \"{n}\"]")
}

/// Whether every host in `names` runs `agent.node` with `arg` in its command line.
fn agent_runs(rig: &Rig, names: &[&str], arg: &str) -> Result<bool> {
    for host in rig.hosts.iter().filter(|h| names.contains(&h.name())) {
        if !prop(host, "agent-node.service", "ExecStart")?.contains(arg) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rollout as `fleet status --json` shows it.
fn rollout_of(c: &Controller) -> Result<serde_json::Value> {
    let json = c.status_json()?;
    ensure!(json["rollout"].is_object(), "no rollout in the status: {json:#}");
    Ok(json["rollout"].clone())
}

/// A version that cannot start, pushed with `fleet apply`: the first batch (db1, first by name)
/// fails and is rolled back, the apply exits 5 and says so per host, web1 and web2 are never
/// touched, a second apply of the same files (a new controller process) touches nobody, `fleet
/// status` names the failed desired state, the host and why; drift on a held host is still
/// repaired (with what it runs); `fleet rollout retry` pushes it
/// again (to db1, which fails again); then a fixed version reaches every host.
fn failing_version(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(ROLLING)?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, BROKEN)?;
    // What happened to the hosts first, then what the apply said about it.
    let failed = c.kapell(&["fleet", "apply"])?;
    eprintln!("$ kapell fleet apply (a version that cannot start)\n{}", failed.stdout);
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} was touched:\n{failed}");
    }
    ensure!(agent_runs(rig, &["db1"], "7000003")?, "db1 was not rolled back:\n{failed}");
    let after = all_pids(&rig.hosts)?;
    let again = c.kapell(&["fleet", "apply"])?;
    ensure!(all_pids(&rig.hosts)? == after, "a second apply of the failed state touched a host:\n{again}");

    ensure!(failed.code == Some(5), "the apply that rolled back should exit 5:\n{failed}");
    ensure!(failed.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("ROLLED BACK")), "{failed}");
    for web in ["web1 ", "web2 "] {
        ensure!(failed.stdout.lines().any(|l| l.starts_with(web) && l.contains("held back")), "{failed}");
    }
    ensure!(again.code == Some(5) && again.stdout.matches("held back").count() >= 3, "{again}");

    // A held host keeps what it runs, and that is still repaired: a unit stopped by hand on web2
    // is started again, nothing else there moves, and the failed version stays away.
    rig.hosts[1].systemctl_ok(&["stop", "shop-cache.service"])?;
    let repaired = c.expect(&["fleet", "apply"], 5)?;
    ensure!(repaired.stdout.contains("the set it runs was repaired"), "{repaired}");
    let web2 = pids(&rig.hosts[1], WEB_UNITS)?;
    for unit in ["shop-web.service", "agent-node.service"] {
        ensure!(web2[unit] == before["web2"][unit], "web2: {unit} moved in the repair:\n{repaired}");
    }
    ensure!(agent_runs(rig, &["web2"], "7000003")?, "the repair brought the failed version:\n{repaired}");

    let rollout = rollout_of(&c)?;
    let desired = c.kapell(&["fleet", "plan", "--json"])?;
    ensure!(rollout["state"] == "failed", "{rollout:#}");
    ensure!(rollout["failed"]["host"] == "db1", "{rollout:#}");
    let why = rollout["failed"]["reason"].as_str().unwrap_or_default();
    // The unit and its last journal lines (the service's own output, or systemd's verdict on it).
    let journal = why.contains("broken version") || why.contains("agent-node.service: Failed with result");
    ensure!(why.contains("agent-node.service") && journal, "{rollout:#}");
    let state = rollout["desired_state"].as_str().unwrap_or_default();
    ensure!(!state.is_empty() && desired.stdout.contains(state), "{rollout:#}\n{desired}");
    let table = c.expect(&["fleet", "status"], 0)?;
    ensure!(table.stdout.contains(&format!("desired state {} failed on db1", &state[..12])), "{table}");
    eprintln!("$ kapell fleet status (after the failed rollout)\n{}", table.stdout);

    // `rollout retry` lifts the hold: the same version goes to db1 again (and fails again).
    c.expect(&["fleet", "promote"], 2)?;
    let held = all_pids(&rig.hosts)?;
    let retried = c.expect(&["fleet", "rollout", "retry"], 5)?;
    let db1_agent = prop(&rig.hosts[2], "agent-node.service", "MainPID")?;
    ensure!(db1_agent != after["db1"]["agent-node.service"], "the retry did not push db1 again:\n{retried}");
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == held[web], "{web} was touched by the retry:\n{retried}");
    }

    agent(&c, &sleep_argv(7000033))?;
    let fixed = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000033")?, "{fixed}");
    c.expect(&["fleet", "rollout", "retry"], 2)?;
    Ok(())
}

/// `agent.node` (on every host) as a native service with an HTTP check on port 8099, probed every
/// 300 ms, unhealthy after 2 failures and then only reported (so the unit stays active); `exec`
/// is its command, `service`: more keys of `[services.node.systemd] Service`.
fn checked_agent(c: &Controller, exec: &str, path: &str, service: &str) -> Result<()> {
    c.write(
        "agent.toml",
        &format!(
            "[services.node]\nexec = {exec}\nplacement = {{ global = true }}\n\
             health = {{ http = 8099, path = \"{path}\", interval = \"300ms\", retries = 2 }}\n\
             on_unhealthy = \"ignore\"\n\n[services.node.systemd]\nService = {{ {service} }}\n"
        ),
    )
}

/// A rollout gated on the peers' HTTP probes of a native service, twice, one host at a time:
/// - a version whose port nothing listens on never becomes ready (its readiness probe holds it
///   activating until its start timeout): db1 (first by name) fails, is rolled back, and the
///   failure names the unit and what the probe got;
/// - a version that passes its first probe (so it starts) and answers 404 from then on: active,
///   never restarted, only its check says it is unhealthy; db1 fails at `healthy_deadline`, is
///   rolled back, and `fleet status` names the unit and its health check.
///
/// Neither reaches web1 or web2: their main PIDs never move, through a second apply too.
fn failing_http_check(rig: &mut Rig) -> Result<()> {
    // Healthy for 5 s: well past the host's prober taking over from the readiness probe (it looks
    // for new services every second) and failing `retries` probes; a shorter time can confirm a
    // version before anyone probed it after its start.
    let c = rig.converged("max_parallel = 1\nmin_healthy_time = \"5s\"\nhealthy_deadline = \"10s\"\n")?;
    let before = all_pids(&rig.hosts)?;
    let untouched = |what: &str, run: &Run| -> Result<()> {
        for (i, web) in [(0, "web1"), (1, "web2")] {
            ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} was touched by {what}:\n{run}");
        }
        ensure!(agent_runs(rig, &["db1"], "7000003")?, "db1 was not rolled back after {what}:\n{run}");
        Ok(())
    };

    checked_agent(&c, &sleep_argv(7000066), "/", "TimeoutStartSec = \"4s\"")?;
    let never = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (a check nothing answers)\n{}", never.stdout);
    untouched("a version nothing answers", &never)?;
    ensure!(never.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("ROLLED BACK")), "{never}");
    let rollout = rollout_of(&c)?;
    ensure!(rollout["state"] == "failed" && rollout["failed"]["host"] == "db1", "{rollout:#}");
    let why = rollout["failed"]["reason"].as_str().unwrap_or_default();
    ensure!(why.contains("agent-node.service: health check") && why.contains("connection refused"), "{rollout:#}");

    let once = "[\"/bin/sh\", \"-c\", \"rm -f /run/health-once; \
                exec /usr/local/bin/busybox httpd -f -p 127.0.0.1:8099 -h /srv/once\"]";
    checked_agent(&c, once, "/cgi-bin/health", "")?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (a check that fails once started)\n{}", failed.stdout);
    untouched("a version failing its check", &failed)?;
    ensure!(failed.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("ROLLED BACK")), "{failed}");
    let again = c.expect(&["fleet", "apply"], 5)?;
    untouched("a second apply", &again)?;

    let rollout = rollout_of(&c)?;
    ensure!(rollout["state"] == "failed" && rollout["failed"]["host"] == "db1", "{rollout:#}");
    let state = rollout["desired_state"].as_str().unwrap_or_default();
    let plan = c.kapell(&["fleet", "plan", "--json"])?;
    ensure!(!state.is_empty() && plan.stdout.contains(state), "not the desired state: {rollout:#}\n{plan}");
    let why = rollout["failed"]["reason"].as_str().unwrap_or_default();
    ensure!(why.contains("agent-node.service: health check unhealthy (last probe: status 404)"), "{rollout:#}");
    let table = c.expect(&["fleet", "status"], 0)?;
    ensure!(table.stdout.contains(&format!("desired state {} failed on db1", &state[..12])), "{table}");
    ensure!(table.stdout.contains("health check unhealthy"), "{table}");
    eprintln!("$ kapell fleet status (after the failed rollout)\n{}", table.stdout);
    Ok(())
}

/// The body of `[rollout]` for one canary.
fn canary(auto_promote: bool, min_healthy: &str) -> String {
    format!(
        "max_parallel = 1\nmin_healthy_time = \"{min_healthy}\"\nhealthy_deadline = \"8s\"\ncanary = 1\n\
         auto_promote = {auto_promote}\n"
    )
}

/// Canary 1 of 3 without auto_promote: db1 (first by name) gets the new version, web1 and web2
/// keep theirs through any number of applies until `kapell fleet promote`, then get it.
fn canaries_wait_for_promote(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(false, "1s"))?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, &sleep_argv(7000044))?;
    let plan = c.expect(&["fleet", "plan"], 0)?;
    ensure!(plan.stdout.contains("db1 (db1): canary"), "{plan}");
    ensure!(plan.stdout.contains("web1 (web1): after promotion, batch 1"), "{plan}");
    ensure!(plan.stdout.contains("web2 (web2): after promotion, batch 2"), "{plan}");
    let first = c.expect(&["fleet", "apply"], 6)?;
    eprintln!("$ kapell fleet apply (canary = 1)\n{}", first.stdout);
    ensure!(agent_runs(rig, &["db1"], "7000044")?, "the canary did not get the new version:\n{first}");
    for _ in 0..2 {
        let again = c.expect(&["fleet", "apply"], 6)?;
        ensure!(again.stdout.matches("waiting for promotion").count() >= 2, "{again}");
        for (i, web) in [(0, "web1"), (1, "web2")] {
            ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} changed before the promotion:\n{again}");
        }
    }
    let rollout = rollout_of(&c)?;
    ensure!(
        rollout["state"] == "waiting for promotion" && rollout["canaries"] == serde_json::json!(["db1"]),
        "{rollout:#}"
    );
    let table = c.expect(&["fleet", "status"], 0)?;
    ensure!(table.stdout.contains("canaries db1 healthy, waiting for `kapell fleet promote`"), "{table}");
    eprintln!("$ kapell fleet status (canary up)\n{}", table.stdout);

    c.expect(&["fleet", "promote", "nosuchstack"], 2)?;
    let promoted = c.expect(&["fleet", "promote", "agent"], 0)?;
    eprintln!("$ kapell fleet promote agent\n{}", promoted.stdout);
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000044")?, "{promoted}");
    ensure!(rollout_of(&c)?["state"] == "completed", "{promoted}");
    Ok(())
}

/// A pass limited to the canary (`--on db1`) completes the rollout of what it was given, but
/// promotes nothing: the next apply of every host still holds web1 and web2 until `kapell fleet
/// promote`.
fn canary_alone(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(false, "1s"))?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, &sleep_argv(7000046))?;
    let alone = Run::of(&mut c.command(&["fleet", "apply", "--on", "db1"]))?;
    ensure!(agent_runs(rig, &["db1"], "7000046")?, "the canary did not get the new version:\n{alone}");
    let rest = c.expect(&["fleet", "apply"], 6)?;
    ensure!(rest.stdout.matches("waiting for promotion").count() >= 2, "{alone}\n{rest}");
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} changed before the promotion:\n{rest}");
    }
    let promoted = c.expect(&["fleet", "promote"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000046")?, "{promoted}");
    Ok(())
}

/// Canary 1 of 3 with auto_promote: one apply brings every host, the others only once the
/// canary has been up for min_healthy_time (3 s).
fn canaries_auto_promote(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(true, "3s"))?;
    agent(&c, &sleep_argv(7000055))?;
    let run = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000055")?, "{run}");
    let started = |i: usize| -> Result<u64> {
        Ok(prop(&rig.hosts[i], "agent-node.service", "ExecMainStartTimestampMonotonic")?.parse()?)
    };
    // The hosts share this machine's kernel, so their monotonic clocks agree.
    let canary_started = started(2)?;
    for i in [0, 1] {
        let gap = Duration::from_micros(started(i)?.saturating_sub(canary_started));
        ensure!(gap >= Duration::from_secs(3), "{} started {gap:?} after the canary:\n{run}", rig.hosts[i].name());
    }
    Ok(())
}

/// A canary that fails fails the desired state: nobody else is touched, now or by a later apply.
fn failing_canary(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(true, "1s"))?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, BROKEN)?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (a failing canary)\n{}", failed.stdout);
    ensure!(failed.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("ROLLED BACK")), "{failed}");
    c.expect(&["fleet", "apply"], 5)?;
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} was touched after its canary failed");
    }
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1");
    Ok(())
}

/// A host that a rollout's push cannot reach fails nothing (an unreachable host never blocks or
/// rolls back the others): web1 refuses new connections, and its master connection is cut while
/// db1's batch runs. db1 keeps the new version, web2 (after web1) still gets it, web1 is
/// reported unreachable and keeps its old one, and the rollout stays in progress with web1 in
/// flight. Once web1 answers, the next apply brings it the version and completes the rollout,
/// and nothing else moves.
fn unreachable_in_a_rollout(rig: &mut Rig) -> Result<()> {
    // Healthy for longer than ROLLING asks: web1's master connection must be cut within db1's
    // batch, which ends `min_healthy_time` after db1 runs the new version.
    let c = rig.converged("max_parallel = 1\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"10s\"\n")?;
    agent(&c, &sleep_argv(7000088))?;
    let web1 = &rig.hosts[0];
    // ssh.service stops only its listener (KillMode=process): the plan still gets through on the
    // master connection.
    web1.systemctl_ok(&["stop", "ssh.service"])?;
    let start = Instant::now();
    let apply = c.command(&["fleet", "apply"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let cut = support::eventually("db1 runs the new version", Duration::from_secs(30), || {
        agent_runs(rig, &["db1"], "7000088")
    })
    .and_then(|()| web1.exec_ok(&["pkill", "-f", "sshd: root"]).map(drop));
    let first = Run::from(apply.wait_with_output()?, start.elapsed());
    web1.systemctl_ok(&["start", "ssh.service"])?;
    cut?;
    eprintln!("$ kapell fleet apply (web1 unreachable after the plan)\n{}", first.stdout);
    ensure!(first.code == Some(3), "the apply should fail web1 alone:\n{first}");
    ensure!(first.stdout.lines().any(|l| l.starts_with("web1 ") && l.contains("FAILED")), "{first}");
    ensure!(first.stdout.contains("the rollout goes on without it"), "{first}");
    ensure!(agent_runs(rig, &["db1", "web2"], "7000088")?, "db1 and web2 should run the new version:\n{first}");
    ensure!(agent_runs(rig, &["web1"], "7000003")?, "web1 changed:\n{first}");
    let rollout = rollout_of(&c)?;
    let in_flight = rollout["in_flight"] == serde_json::json!(["web1"]);
    ensure!(rollout["state"] == "in progress" && in_flight && rollout["failed"].is_null(), "{rollout:#}");

    let before = all_pids(&rig.hosts)?;
    let second = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000088")?, "{second}");
    let after = all_pids(&rig.hosts)?;
    for host in ["db1", "web2"] {
        ensure!(after[host] == before[host], "{host} moved when web1 caught up:\n{second}");
    }
    ensure!(rollout_of(&c)?["state"] == "completed", "{second}");
    Ok(())
}

/// A canary that has not been healthy holds the others back, whatever happened to it: the
/// controller is killed while it watches db1 (the canary, first by name) after the push, and db1
/// then refuses connections. The next apply cannot reach db1 and sets it aside; web1 and web2
/// wait for it, untouched, and the desired state does not fail. Once db1 answers, the next apply
/// watches and confirms it, then brings the others.
fn unreachable_canary(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(true, "5s"))?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, &sleep_argv(7000099))?;
    let db1 = &rig.hosts[2];
    let mut apply = c.command(&["fleet", "apply"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let pushed = support::eventually("db1 runs the new version", Duration::from_secs(30), || {
        agent_runs(rig, &["db1"], "7000099")
    });
    let _ = apply.kill();
    let _ = apply.wait();
    pushed?;
    // ssh.service stops its listener; the master connection goes with its session.
    db1.systemctl_ok(&["stop", "ssh.service"])?;
    let _ = db1.exec(&["pkill", "-f", "sshd: root"]);
    let first = c.kapell(&["fleet", "apply"]);
    db1.systemctl_ok(&["start", "ssh.service"])?;
    let first = first?;
    eprintln!("$ kapell fleet apply (the canary cannot be reached)\n{}", first.stdout);
    ensure!(first.code == Some(3), "the apply should fail db1 alone:\n{first}");
    ensure!(first.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("FAILED")), "{first}");
    ensure!(first.stdout.contains("the others wait for it"), "{first}");
    ensure!(first.stdout.contains("waiting for canary db1"), "{first}");
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} moved while its canary was away:\n{first}");
    }
    let rollout = rollout_of(&c)?;
    let in_flight = rollout["in_flight"] == serde_json::json!(["db1"]);
    ensure!(rollout["state"] == "in progress" && in_flight && rollout["failed"].is_null(), "{rollout:#}");

    let second = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000099")?, "{second}");
    ensure!(rollout_of(&c)?["state"] == "completed", "{second}");
    Ok(())
}

/// `kapell fleet apply` while db1 takes every connection, reads each request and drops the
/// requests of `kind` (`install`, `rollback`) without a word (its key runs a gate that does so),
/// passing the others to `kapell receive`; db1's key is its own again afterwards.
fn apply_while_db1_drops(rig: &Rig, c: &Controller, kind: &str) -> Result<Run> {
    let db1 = &rig.hosts[2];
    let gate = format!(
        "#!/bin/sh\n# The request is the whole of stdin: a {kind} request gets no reply at all.\n\
         request=$(cat)\ncase \"$request\" in *'\"request\":\"{kind}\"'*) exit 255 ;; esac\n\
         printf '%s' \"$request\" | exec kapell receive\n"
    );
    std::fs::write(db1.root().join("usr/local/bin/kapell-gate"), gate)?;
    db1.exec_ok(&["chmod", "755", "/usr/local/bin/kapell-gate"])?;
    let keys = db1.root().join("root/.ssh/authorized_keys");
    std::fs::write(&keys, format!("command=\"/usr/local/bin/kapell-gate\" {}", rig.authorized_keys))?;
    c.close_masters();
    let run = c.kapell(&["fleet", "apply"]);
    std::fs::write(&keys, &rig.authorized_keys)?;
    c.close_masters();
    run
}

/// A push that reached its host and then got no reply may be what cut the host off: that fails
/// the batch like any failure, and nobody else gets the set. db1 (first by name) takes the
/// connection, reads the install and drops it without a word (its key runs a gate that does
/// so); web1 and web2 are held back, untouched.
fn lost_host(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(ROLLING)?;
    let before = all_pids(&rig.hosts)?;
    agent(&c, &sleep_argv(7000111))?;
    let failed = apply_while_db1_drops(rig, &c, "install")?;
    eprintln!("$ kapell fleet apply (db1 drops the install)\n{}", failed.stdout);
    ensure!(failed.code == Some(5), "the apply should fail the batch:\n{failed}");
    ensure!(failed.stdout.contains("the connection ended without a reply"), "{failed}");
    for (i, web) in [(0, "web1"), (1, "web2")] {
        ensure!(pids(&rig.hosts[i], WEB_UNITS)? == before[web], "{web} got the set:\n{failed}");
        ensure!(failed.stdout.lines().any(|l| l.starts_with(web) && l.contains("held back")), "{failed}");
    }
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1", "{failed}");
    Ok(())
}

/// `agent.node` with `replicas = 2`: its file is the template `agent-node@.service`; what runs,
/// and what a host's reply names, are its instances.
fn replicated_agent(c: &Controller, argv: &str) -> Result<()> {
    c.write(
        "agent.toml",
        &format!(
            "[services.node]\nexec = {argv}\nreplicas = 2\nrestart = \"always\"\nrestart_delay = \"500ms\"\n\
             placement = {{ global = true }}\n"
        ),
    )
}

const INSTANCES: &[&str] = &["agent-node@1.service", "agent-node@2.service"];

/// A replicated service's version that fails after its start is judged by its instances (the
/// push changed their template): the first batch (db1) fails and goes back to the instances it ran; web1 and
/// web2 keep theirs (their main PIDs never move), through a second apply and `--no-rollout`,
/// which pushes without batches but not a desired state that failed.
fn failing_replicas(rig: &mut Rig) -> Result<()> {
    // Healthy for 3 s: longer than the version lives.
    let c = rig.converged("max_parallel = 1\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"8s\"\n")?;
    replicated_agent(&c, &sleep_argv(7000099))?;
    let up = c.expect(&["fleet", "apply"], 0)?;
    let before: Vec<BTreeMap<String, String>> =
        rig.hosts.iter().map(|h| pids(h, INSTANCES)).collect::<Result<_>>().with_context(|| format!("{up}"))?;
    // It starts, so the install succeeds; its instances exit a second later, again and again,
    // which only the batch's health gate sees.
    replicated_agent(&c, "[\"/bin/sh\", \"-c\", \"sleep 1; echo late failure; exit 3\"]")?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (a replicated version that fails after its start)\n{}", failed.stdout);
    ensure!(failed.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("ROLLED BACK")), "{failed}");
    let rollout = rollout_of(&c)?;
    let why = rollout["failed"]["reason"].as_str().unwrap_or_default();
    ensure!(rollout["failed"]["host"] == "db1" && why.contains("agent-node@"), "{rollout:#}");
    let again = c.expect(&["fleet", "apply"], 5)?;
    let direct = c.expect(&["fleet", "apply", "--no-rollout"], 5)?;
    ensure!(direct.stdout.lines().filter(|l| l.contains("held back")).count() >= 2, "{direct}");
    for (i, web) in [(0, "web1"), (1, "web2")] {
        let now = pids(&rig.hosts[i], INSTANCES)?;
        ensure!(now == before[i], "{web}'s instances moved:\n{failed}\n{again}\n{direct}");
    }
    for unit in INSTANCES {
        let exec = prop(&rig.hosts[2], unit, "ExecStart")?;
        ensure!(exec.contains("7000099"), "db1's {unit} was not rolled back: {exec}\n{failed}");
    }
    Ok(())
}

/// On web1: `db` with `replicas` instances, and `web`, which requires `db`.
fn farm(c: &Controller, replicas: u32) -> Result<()> {
    c.write(
        "farm.toml",
        &format!(
            "[services.db]\nexec = [\"/bin/sleep\", \"7000201\"]\nreplicas = {replicas}\n\
             placement = {{ hosts = [\"web1\"] }}\n\n\
             [services.web]\nexec = [\"/bin/sleep\", \"7000202\"]\nrequires = [\"db\"]\n\
             placement = {{ hosts = [\"web1\"] }}\n"
        ),
    )
}

/// A push that scales `db` down and up starts and stops its instances only: `web`, whose
/// `Requires=` lists them, keeps its process (the peer plans as `kapell apply` does), through
/// the pushes and a later no-op apply.
fn scaled_dependency(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(QUICK)?;
    farm(&c, 2)?;
    c.expect(&["fleet", "apply"], 0)?;
    let web1 = &rig.hosts[0];
    let first = pids(web1, &["farm-web.service", "farm-db@1.service", "farm-db@2.service"])?;
    farm(&c, 1)?;
    let down = c.expect(&["fleet", "apply"], 0)?;
    ensure!(prop(web1, "farm-db@2.service", "ActiveState")? == "inactive", "db@2 still runs:\n{down}");
    farm(&c, 3)?;
    let up = c.expect(&["fleet", "apply"], 0)?;
    let now = pids(web1, &["farm-web.service", "farm-db@1.service", "farm-db@2.service", "farm-db@3.service"])?;
    for unit in ["farm-web.service", "farm-db@1.service"] {
        ensure!(now[unit] == first[unit], "{unit} was restarted by scaling db:\n{down}\n{up}");
    }
    let again = c.expect(&["fleet", "apply"], 0)?;
    ensure!(pids(web1, &["farm-web.service", "farm-db@3.service"])?.iter().all(|(u, p)| now[u] == *p), "{again}");
    Ok(())
}

/// `canary = 3` of the 3 hosts a change reaches: once the canaries are healthy nobody is left
/// to promote them to, so the rollout is complete (not waiting for `kapell fleet promote`).
fn only_canaries(rig: &mut Rig) -> Result<()> {
    let c = rig.converged("max_parallel = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"8s\"\ncanary = 3\n")?;
    agent(&c, &sleep_argv(7000122))?;
    let run = c.expect(&["fleet", "apply"], 0)?;
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000122")?, "{run}");
    let rollout = rollout_of(&c)?;
    ensure!(rollout["state"] == "completed", "{rollout:#}\n{run}");
    c.expect(&["fleet", "promote"], 2)?;
    Ok(())
}

/// The target of one of `host`'s received-set links (`current`, `confirmed`).
fn received_link(host: &Host, name: &str) -> Result<PathBuf> {
    let path = host.root().join("etc/kapell/received").join(name);
    std::fs::read_link(&path).with_context(|| format!("{}", path.display()))
}

/// A failed batch whose rollback does not reach its host (db1 answers every request but a
/// rollback, which it drops): db1 is reported failed, not rolled back, and held. The next apply
/// (db1 answering everything again) holds it back too and does not confirm the failed set it
/// still runs, so its own timer takes it back.
fn failed_rollback(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(ROLLING)?;
    agent(&c, BROKEN)?;
    let failed = apply_while_db1_drops(rig, &c, "rollback")?;
    eprintln!("$ kapell fleet apply (db1 drops the rollback)\n{}", failed.stdout);
    let db1 = &rig.hosts[2];
    ensure!(failed.code == Some(5), "{failed}");
    ensure!(failed.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("FAILED")), "{failed}");
    ensure!(failed.stdout.contains("the rollback failed"), "{failed}");
    ensure!(received_link(db1, "current")? != received_link(db1, "confirmed")?, "db1 should still wait");
    let again = c.expect(&["fleet", "apply"], 5)?;
    ensure!(again.stdout.lines().any(|l| l.starts_with("db1 ") && l.contains("held back")), "{again}");
    ensure!(again.stdout.contains("its rollback failed"), "{again}");
    ensure!(
        received_link(db1, "current")? != received_link(db1, "confirmed")?,
        "the next apply confirmed the failed set on db1:\n{again}"
    );
    Ok(())
}

/// Two shared services changed at once (`shop.web` on web1 and web2, `agent.node` everywhere),
/// `canary = 1`: each service has its canary (db1 for the agent, web1 for the web service), and
/// web2 waits for the promotion, untouched.
fn canaries_per_service(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(&canary(false, "1s"))?;
    let before = all_pids(&rig.hosts)?;
    stacks(&c, "7000133", None)?;
    agent(&c, &sleep_argv(7000134))?;
    let plan = c.expect(&["fleet", "plan"], 0)?;
    for want in ["db1 (db1): canary", "web1 (web1): canary", "web2 (web2): after promotion, batch 1"] {
        ensure!(plan.stdout.contains(want), "no {want:?} in the plan:\n{plan}");
    }
    let first = c.expect(&["fleet", "apply"], 6)?;
    ensure!(agent_runs(rig, &["db1", "web1"], "7000134")?, "the canaries did not get the agent:\n{first}");
    ensure!(prop(&rig.hosts[0], "shop-web.service", "ExecStart")?.contains("7000133"), "web1:\n{first}");
    ensure!(pids(&rig.hosts[1], WEB_UNITS)? == before["web2"], "web2 changed before the promotion:\n{first}");
    let rollout = rollout_of(&c)?;
    ensure!(rollout["canaries"] == serde_json::json!(["db1", "web1"]), "{rollout:#}");
    Ok(())
}

/// One host at a time, a version that runs on db1 (first by name) and fails on the web hosts:
/// db1's batch is healthy and confirmed, web1's fails. The desired state has failed, so db1,
/// which already runs it, goes back too (`auto_revert`), to what it ran before, which is its
/// confirmed set again; web2 is held back. A second apply touches nobody.
fn later_batch_fails(rig: &mut Rig) -> Result<()> {
    let c = rig.converged(ROLLING)?;
    agent(
        &c,
        "[\"/bin/sh\", \"-c\", \"case $(cat /proc/sys/kernel/hostname) in web*) echo not here; exit 3;; esac; \
         exec sleep 7000144\"]",
    )?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (a version that fails on the second batch)\n{}", failed.stdout);
    for (host, word) in [("db1 ", "ROLLED BACK"), ("web1 ", "ROLLED BACK"), ("web2 ", "held back")] {
        ensure!(failed.stdout.lines().any(|l| l.starts_with(host) && l.contains(word)), "{host}{word}:\n{failed}");
    }
    ensure!(rollout_of(&c)?["failed"]["host"] == "web1", "{failed}");
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000003")?, "not every host runs the old version:\n{failed}");
    let db1 = &rig.hosts[2];
    ensure!(
        received_link(db1, "current")? == received_link(db1, "confirmed")?,
        "db1's old set is not its confirmed one"
    );
    let after = all_pids(&rig.hosts)?;
    let again = c.expect(&["fleet", "apply"], 5)?;
    ensure!(all_pids(&rig.hosts)? == after, "a second apply of the failed state touched a host:\n{again}");
    Ok(())
}

/// web2 joins the fleet (fleet.toml) after a desired state failed, to run the global agent (the
/// shop stays on web1): the same stack files and the same shared services, so the same desired
/// state, still failed. web2, which this controller never pushed to, is held back and gets no
/// set at all, and nobody else is touched (db1 is not tried again).
/// `agent.node` running `argv` on `hosts` (a TOML list), restarted whenever it exits.
fn agent_on(c: &Controller, argv: &str, hosts: &str) -> Result<()> {
    c.write(
        "agent.toml",
        &format!(
            "[services.node]\nexec = {argv}\nrestart = \"always\"\nrestart_delay = \"500ms\"\n\
             placement = {{ hosts = {hosts} }}\n"
        ),
    )
}

/// A version that failed is held for the whole fleet: also from web2, a host this controller
/// manages, when the placement of the failed service grows to it (the desired state is the
/// same, and web2's change adds the service rather than changing what it runs).
fn placed_anew(rig: &mut Rig) -> Result<()> {
    let c = Controller::new(&rig.ssh, ROLLING)?;
    stacks(&c, "7000000", Some("[\"db1\", \"web1\"]"))?;
    c.expect(&["fleet", "apply"], 0)?;
    agent_on(&c, BROKEN, "[\"db1\", \"web1\"]")?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1", "{failed}");
    let web2 = pids(&rig.hosts[1], &["shop-web.service", "shop-cache.service"])?;
    agent_on(&c, BROKEN, "[\"db1\", \"web1\", \"web2\"]")?;
    let grown = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (the failed service placed on web2 too)\n{}", grown.stdout);
    ensure!(grown.stdout.lines().any(|l| l.starts_with("web2 ") && l.contains("held back")), "{grown}");
    ensure!(prop(&rig.hosts[1], "agent-node.service", "LoadState")? == "not-found", "web2 got it:\n{grown}");
    ensure!(pids(&rig.hosts[1], &["shop-web.service", "shop-cache.service"])? == web2, "web2 moved:\n{grown}");
    Ok(())
}

fn joining_host(rig: &mut Rig) -> Result<()> {
    let c = Controller::new(&rig.ssh, ROLLING)?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?;
    let without = fleet.replace("[hosts.web2]\naddress = \"web2\"\nlabels = { role = \"web\" }\n\n", "");
    ensure!(without != fleet, "web2 is not in fleet.toml:\n{fleet}");
    c.write("fleet.toml", &without)?;
    stacks(&c, "7000000", None)?;
    let shop = std::fs::read_to_string(c.dir.path().join("shop.toml"))?;
    c.write("shop.toml", &shop.replace("{ labels = { role = \"web\" } }", "{ hosts = [\"web1\"] }"))?;
    c.expect(&["fleet", "apply"], 0)?;
    agent(&c, BROKEN)?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1", "{failed}");
    let pids_of = |rig: &Rig| -> Result<Vec<BTreeMap<String, String>>> {
        [0, 2].iter().map(|i| pids(&rig.hosts[*i], units_of(&rig.hosts[*i]))).collect()
    };
    let before = pids_of(rig)?;
    c.write("fleet.toml", &fleet)?;
    let joined = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (web2 joins after the failure)\n{}", joined.stdout);
    ensure!(joined.stdout.lines().any(|l| l.starts_with("web2 ") && l.contains("held back")), "{joined}");
    ensure!(joined.stdout.contains("failed on db1"), "{joined}");
    ensure!(received_link(&rig.hosts[1], "current").is_err(), "web2 got a set:\n{joined}");
    ensure!(pids_of(rig)? == before, "a host was touched when web2 joined:\n{joined}");
    Ok(())
}

/// One batch of all three hosts, where the new version takes 10 s to start on db1 (its
/// `ExecStartPre=` waits while a file of db1's says so: an image pull, say) and starts at once
/// on web1 and web2. Each push's confirm window (`healthy_deadline` 4 s + `confirm_timeout` 2 s)
/// is shorter than db1's start: web1 and web2 are confirmed from their own pushes, not once
/// db1's returns, so neither goes back on its own. The rollout completes, every host runs the
/// new version as its confirmed set, and nothing moves in the windows after. Then a version that
/// fails on db1 after its slow start takes web1 and web2, confirmed by then, back with it.
fn slow_host_in_a_batch(rig: &mut Rig) -> Result<()> {
    let slow = rig.hosts[2].root().join("etc/kapell-test-slow");
    std::fs::write(&slow, "")?;
    let result = slow_host_in_a_batch_with(rig);
    std::fs::remove_file(&slow)?;
    result
}

fn slow_host_in_a_batch_with(rig: &mut Rig) -> Result<()> {
    let c = rig.converged("max_parallel = 3\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"4s\"\n")?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?;
    c.write("fleet.toml", &fleet.replace("[defaults]\n", "[defaults]\nconfirm_timeout = \"2s\"\n"))?;
    c.write(
        "agent.toml",
        "[services.node]\nexec = [\"/bin/sleep\", \"7000155\"]\nplacement = { global = true }\n\n\
         [services.node.systemd]\n\
         Service = { ExecStartPre = \"/bin/sh -c 'test ! -e /etc/kapell-test-slow || sleep 10'\" }\n",
    )?;
    let run = c.kapell(&["fleet", "apply"])?;
    eprintln!("$ kapell fleet apply (db1 takes 10 s to start the new version)\n{}", run.stdout);
    ensure!(run.code == Some(0), "the rollout failed:\n{run}");
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000155")?, "not every host runs the new version:\n{run}");
    ensure!(rollout_of(&c)?["state"] == "completed", "{run}");
    let after = all_pids(&rig.hosts)?;
    // Past every window: a host left unconfirmed would go back now.
    std::thread::sleep(Duration::from_secs(8));
    for host in &rig.hosts {
        let name = host.name();
        ensure!(received_link(host, "current")? == received_link(host, "confirmed")?, "{name} is unconfirmed:\n{run}");
    }
    ensure!(all_pids(&rig.hosts)? == after, "a host moved after the rollout:\n{run}");
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000155")?, "a host went back:\n{run}");

    // A version that fails on db1 once it has started, slowly: web1 and web2 were confirmed by
    // then, and go back with db1, from the set they confirmed to the one before.
    c.write(
        "agent.toml",
        "[services.node]\nexec = [\"/bin/sh\", \"-c\", \"test ! -e /etc/kapell-test-slow || exit 3; exec sleep 7000156\"]\n\
         restart = \"always\"\nrestart_delay = \"500ms\"\nplacement = { global = true }\n\n\
         [services.node.systemd]\n\
         Service = { ExecStartPre = \"/bin/sh -c 'test ! -e /etc/kapell-test-slow || sleep 10'\" }\n",
    )?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    eprintln!("$ kapell fleet apply (the new version fails on db1 after its slow start)\n{}", failed.stdout);
    for host in ["db1 ", "web1 ", "web2 "] {
        ensure!(failed.stdout.lines().any(|l| l.starts_with(host) && l.contains("ROLLED BACK")), "{host}:\n{failed}");
    }
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1", "{failed}");
    ensure!(agent_runs(rig, &["db1", "web1", "web2"], "7000155")?, "not every host went back:\n{failed}");
    for host in &rig.hosts {
        let name = host.name();
        ensure!(received_link(host, "current")? == received_link(host, "confirmed")?, "{name}:\n{failed}");
    }
    Ok(())
}

/// A version that fails on db1 while a file of db1's says so is rolled back; the file goes, and
/// `fleet rollout retry` pushes the version again, batch by batch. While it is under way (web1
/// has it), web2's set is edited by hand: the retry may install the version db1 rolled back,
/// and nothing more, so web2 refuses it and keeps the edit, as it would without the retry
/// (only `--force` overwrites a set this controller did not push). Its refusal holds web2 back
/// on its own, as the plan's check would have had the edit come before it: the push changed
/// nothing there, so it fails no batch, sends web2 no rollback and takes nothing back elsewhere.
fn retry_over_a_hand_edit(rig: &mut Rig) -> Result<()> {
    let flag = rig.hosts[2].root().join("etc/kapell-test-fail");
    std::fs::write(&flag, "")?;
    let result = retry_over_a_hand_edit_with(rig, &flag);
    let _ = std::fs::remove_file(&flag);
    result
}

fn retry_over_a_hand_edit_with(rig: &mut Rig, flag: &Path) -> Result<()> {
    let c = rig.converged("max_parallel = 1\nmin_healthy_time = \"3s\"\nhealthy_deadline = \"8s\"\n")?;
    agent(&c, "[\"/bin/sh\", \"-c\", \"test ! -e /etc/kapell-test-fail || exit 3; exec sleep 7000177\"]")?;
    let failed = c.expect(&["fleet", "apply"], 5)?;
    ensure!(rollout_of(&c)?["failed"]["host"] == "db1", "{failed}");
    std::fs::remove_file(flag)?;

    let mut retry = c.command(&["fleet", "rollout", "retry"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let cache = rig.hosts[1].root().join("etc/kapell/received/current/shop-cache.service");
    let edited = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent_runs(rig, &["web1"], "7000177")? {
            ensure!(Instant::now() < deadline, "the retry never reached web1");
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(!agent_runs(rig, &["web2"], "7000177")?, "web2 had the version before web1's batch passed");
        let text = std::fs::read_to_string(&cache)?;
        std::fs::write(&cache, format!("{text}# edited on web2 by hand\n"))?;
        Ok(())
    })();
    if edited.is_err() {
        let _ = retry.kill();
    }
    let out = retry.wait_with_output()?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    edited.with_context(|| report.clone())?;
    eprintln!("$ kapell fleet rollout retry (web2 edited by hand meanwhile)\n{report}");
    ensure!(
        std::fs::read_to_string(&cache)?.contains("edited on web2 by hand"),
        "web2's edit was overwritten:\n{report}"
    );
    ensure!(!agent_runs(rig, &["web2"], "7000177")?, "web2 got the version:\n{report}");
    // Its refusal changed nothing there and says nothing of the version: web2 is held back on its
    // own, as the plan's check would have held it, and fails nothing. The others keep the
    // version, and the rollout completes.
    let web2 = report.lines().find(|l| l.starts_with("web2 ")).unwrap_or_default();
    ensure!(web2.contains("held back"), "web2 is not held back on its own:\n{report}");
    ensure!(report.contains("did not push"), "web2's refusal is not reported:\n{report}");
    ensure!(out.status.code() == Some(5), "exit status {:?} (5: a host held back):\n{report}", out.status);
    for host in ["db1 ", "web1 "] {
        ensure!(report.lines().any(|l| l.starts_with(host) && l.contains("converged")), "{host}:\n{report}");
    }
    ensure!(agent_runs(rig, &["db1", "web1"], "7000177")?, "db1 and web1 lost the version:\n{report}");
    let rollout = rollout_of(&c)?;
    ensure!(rollout["failed"].is_null() && rollout["state"] == "completed", "{rollout:#}");
    ensure!(!rollout["done"].as_array().is_some_and(|d| d.iter().any(|h| h == "web2")), "web2 is done: {rollout:#}");

    // The next passes hold web2 by the plan's check, and move nothing anywhere.
    let running: Vec<_> = rig.hosts.iter().map(|h| pids(h, &["agent-node.service"])).collect::<Result<_>>()?;
    for _ in 0..2 {
        let again = c.expect(&["fleet", "apply"], 5)?;
        let web2 = again.stdout.lines().find(|l| l.starts_with("web2 ")).unwrap_or_default();
        ensure!(web2.contains("held back"), "{again}");
        ensure!(again.to_string().contains("did not push"), "{again}");
        for host in ["db1 ", "web1 "] {
            ensure!(again.stdout.lines().any(|l| l.starts_with(host) && l.contains("up to date")), "{host}: {again}");
        }
    }
    let now: Vec<_> = rig.hosts.iter().map(|h| pids(h, &["agent-node.service"])).collect::<Result<_>>()?;
    ensure!(now == running, "a later pass restarted a service: {running:?} -> {now:?}");
    ensure!(std::fs::read_to_string(&cache)?.contains("edited on web2 by hand"), "web2's edit was overwritten later");
    ensure!(rollout_of(&c)?["failed"].is_null(), "a later pass failed the desired state");
    Ok(())
}
