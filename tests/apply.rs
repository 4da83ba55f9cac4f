//! `kapell apply`, `kapell status` and `kapell logs` on booted systemd hosts (nspawn), with
//! native services, and the generator run by the real systemd at boot and at daemon-reload.
//! Needs root and the packages of .ci/deps; nothing is mocked, nothing is skipped.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use support::{Footprint, Host, Run, eventually};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

/// A three-service stack: `api` requires `db`; `worker` stands alone. `api_arg` and `worker_arg`
/// are the `sleep` arguments, so an edit changes exactly one unit.
fn shop(api_arg: &str, worker: Option<&str>) -> String {
    let mut text = format!(
        "description = \"test shop\"\n\n\
         [services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\n\n\
         [services.api]\nexec = [\"/bin/sleep\", \"{api_arg}\"]\nrequires = [\"db\"]\n"
    );
    if let Some(arg) = worker {
        text.push_str(&format!("\n[services.worker]\nexec = [\"/bin/sleep\", \"{arg}\"]\n"));
    }
    text
}

fn boot() -> Result<Host> {
    Host::builder().kapell(KAPELL).boot()
}

fn write_stack(host: &Host, name: &str, text: &str) -> Result<()> {
    let dir = host.root().join("etc/kapell");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.toml")), text).with_context(|| format!("cannot write stack {name}"))
}

fn remove_stack(host: &Host, name: &str) -> Result<()> {
    std::fs::remove_file(host.root().join(format!("etc/kapell/{name}.toml"))).context("cannot remove stack")
}

/// Runs `kapell args…` inside the host.
fn kapell(host: &Host, args: &[&str]) -> Result<Run> {
    let mut full = vec!["kapell"];
    full.extend_from_slice(args);
    let start = Instant::now();
    let out = host.exec(&full)?;
    Ok(Run::from(out, start.elapsed()))
}

/// Runs `kapell args…` and requires exit status `code`.
fn kapell_expect(host: &Host, args: &[&str], code: i32) -> Result<Run> {
    let run = kapell(host, args)?;
    ensure!(run.code == Some(code), "`kapell {}` should exit {code}:\n{run}", args.join(" "));
    Ok(run)
}

fn main_pids(host: &Host, units: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut pids = BTreeMap::new();
    for unit in units {
        let pid = host.show(unit, "MainPID")?;
        ensure!(pid != "0", "{unit} has no main process (ActiveState {})", host.show(unit, "ActiveState")?);
        pids.insert(unit.to_string(), pid);
    }
    Ok(pids)
}

fn ensure_active(host: &Host, units: &[&str]) -> Result<()> {
    for unit in units {
        let state = host.show(unit, "ActiveState")?;
        ensure!(state == "active", "{unit} is {state}, expected active");
    }
    Ok(())
}

/// The unit is gone: stopped, and systemd has no file for it (`not-found`) and does not list it.
fn ensure_gone(host: &Host, unit: &str) -> Result<()> {
    ensure!(host.show(unit, "ActiveState")? == "inactive", "{unit} still runs");
    ensure!(host.show(unit, "LoadState")? == "not-found", "{unit} still has a unit file");
    let listed = host.systemctl_ok(&["list-units", "--all", "--no-legend", "--plain", unit])?;
    ensure!(listed.trim().is_empty(), "{unit} still listed: {listed}");
    Ok(())
}

/// Checksums of the kapell files in the generator directory: what systemd has loaded.
fn generator_files(host: &Host) -> Result<String> {
    host.exec_ok(&["sh", "-c", "cd /run/systemd/generator && grep -l '^X-Kapell-Stack=' * | sort | xargs -r sha256sum"])
}

const SHOP: [&str; 4] = ["shop.target", "shop-db.service", "shop-api.service", "shop-worker.service"];

/// The whole life of a stack through `kapell apply`: first apply starts it, a second does
/// nothing, an edit restarts exactly the edited service, a deleted service is stopped and its
/// unit disappears, a deleted stack is stopped entirely.
#[test]
fn apply_starts_restarts_only_what_changed_and_stops_what_was_removed() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);

    write_stack(&host, "shop", &shop("infinity", Some("infinity")))?;
    let first = kapell_expect(&host, &["apply"], 0)?;
    let mut started = first.units("started");
    started.sort();
    let mut expected: Vec<String> = SHOP.iter().map(|s| s.to_string()).collect();
    expected.sort();
    ensure!(started == expected, "first apply should start the target and the three services:\n{first}");
    ensure_active(&host, &SHOP)?;
    eprintln!("timing: first apply (3 services) {:?}", first.took);

    let before = main_pids(&host, &SHOP[1..])?;
    let again = kapell_expect(&host, &["apply"], 0)?;
    ensure!(again.stdout.contains("nothing to do"), "second apply should say nothing to do:\n{again}");
    ensure!(again.units("started").is_empty() && again.units("restarted").is_empty(), "{again}");
    ensure!(main_pids(&host, &SHOP[1..])? == before, "a no-op apply changed processes");
    eprintln!("timing: no-op apply {:?}", again.took);

    // Edit api only: api restarts, db (which api requires) and worker keep their processes.
    // kapell does not subscribe to systemd's signals (a subscriber makes every reload emit a
    // signal per unit), so this also checks that the restart's JobRemoved signal still reaches
    // it, rather than the fallback that reads the unit's state after a quiet second.
    write_stack(&host, "shop", &shop("99999", Some("infinity")))?;
    let start = Instant::now();
    let edit = Run::from(host.exec(&["env", "KAPELL_LOG=debug", "kapell", "apply"])?, start.elapsed());
    ensure!(edit.code == Some(0), "apply with one edit failed:\n{edit}");
    ensure!(
        edit.stderr.contains("restart shop-api.service: done, from its JobRemoved signal"),
        "the restart's end should come from its JobRemoved signal:\n{edit}"
    );
    ensure!(edit.units("restarted") == ["shop-api.service"], "only api should restart:\n{edit}");
    ensure!(edit.units("started").is_empty() && edit.units("stopped").is_empty(), "{edit}");
    let after = main_pids(&host, &SHOP[1..])?;
    for unit in ["shop-db.service", "shop-worker.service"] {
        ensure!(after[unit] == before[unit], "{unit} was restarted: {before:?} -> {after:?}");
    }
    ensure!(after["shop-api.service"] != before["shop-api.service"], "api kept its process");
    ensure!(host.show("shop-api.service", "ExecStart")?.contains("99999"), "api runs the old command");
    eprintln!("timing: apply with one changed service {:?}", edit.took);

    // Delete worker: stopped while its file existed, then gone from systemd.
    write_stack(&host, "shop", &shop("99999", None))?;
    let delete = kapell_expect(&host, &["apply"], 0)?;
    ensure!(delete.units("stopped") == ["shop-worker.service"], "worker should be stopped:\n{delete}");
    ensure!(delete.units("restarted").is_empty(), "{delete}");
    ensure_gone(&host, "shop-worker.service")?;
    for (unit, pid) in main_pids(&host, &SHOP[1..3])? {
        ensure!(after[&unit] == pid, "{unit} was restarted when worker was deleted");
    }

    // A stopped stack is started again by apply, with nothing reloaded.
    host.systemctl_ok(&["stop", "shop.target"])?;
    // systemctl waits for the target's own job; the stop PartOf= brings db runs beside it.
    eventually("PartOf= stopping db", Duration::from_secs(20), || {
        Ok(host.show("shop-db.service", "ActiveState")? == "inactive")
    })?;
    let restart = kapell_expect(&host, &["apply"], 0)?;
    ensure!(restart.units("started").contains(&"shop.target".to_string()), "{restart}");
    ensure!(!restart.stdout.contains("reloaded"), "no file changed, no reload expected:\n{restart}");
    ensure_active(&host, &SHOP[..3])?;

    // Someone else's reload between the edit and the apply (a package upgrade, a hand
    // `daemon-reload`) brings the new units in while the old processes run on: api's changed
    // command, worker added and then deleted again with its unit running without a file. The
    // apply still restarts api and stops worker, from its record of what it started.
    write_stack(&host, "shop", &shop("99999", Some("infinity")))?;
    kapell_expect(&host, &["apply"], 0)?;
    let running = main_pids(&host, &SHOP[1..])?;
    write_stack(&host, "shop", &shop("88888", None))?;
    host.systemctl_ok(&["daemon-reload"])?;
    ensure!(host.show("shop-worker.service", "LoadState")? == "not-found", "worker's file is still there");
    ensure!(host.show("shop-worker.service", "ActiveState")? == "active", "the reload stopped worker");
    let late = kapell_expect(&host, &["apply"], 0)?;
    ensure!(late.units("restarted") == ["shop-api.service"], "api's change was lost to the reload:\n{late}");
    ensure!(late.units("stopped") == ["shop-worker.service"], "worker runs on without a file:\n{late}");
    ensure!(host.show("shop-worker.service", "ActiveState")? != "active", "worker still runs");
    ensure!(main_pids(&host, &["shop-db.service"])?["shop-db.service"] == running["shop-db.service"], "{late}");
    let settled = kapell_expect(&host, &["apply"], 0)?;
    ensure!(settled.stdout.contains("nothing to do"), "{settled}");

    // Delete the stack file: `kapell apply` stops the whole stack and its units disappear.
    remove_stack(&host, "shop")?;
    let gone = kapell_expect(&host, &["apply"], 0)?;
    let mut stopped = gone.units("stopped");
    stopped.sort();
    ensure!(stopped == ["shop-api.service", "shop-db.service", "shop.target"], "{gone}");
    for unit in &SHOP {
        ensure_gone(&host, unit)?;
    }
    ensure!(generator_files(&host)?.trim().is_empty(), "kapell units left in the generator dir");

    drop(host);
    footprint.assert_gone()
}

/// `--dry-run` and an invalid edit change nothing: same processes, same unit files. Errors name
/// file:line:col. Requests that cannot be carried out as asked are refused before any change.
#[test]
fn dry_run_invalid_edits_and_refusals_change_nothing() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);

    // Dry run on a fresh host: the plan, and nothing loaded.
    write_stack(&host, "shop", &shop("infinity", Some("infinity")))?;
    let plan = kapell_expect(&host, &["apply", "--dry-run"], 0)?;
    ensure!(plan.units("start").len() == 4 && plan.stdout.contains("dry run"), "{plan}");
    ensure!(host.show("shop.target", "LoadState")? == "not-found", "dry run loaded units:\n{plan}");
    ensure!(generator_files(&host)?.trim().is_empty(), "dry run wrote units");

    kapell_expect(&host, &["apply"], 0)?;
    let pids = main_pids(&host, &SHOP[1..])?;
    let files = generator_files(&host)?;

    // Dry run of an edit: says it would restart api, touches nothing.
    write_stack(&host, "shop", &shop("99999", None))?;
    let plan = kapell_expect(&host, &["apply", "--dry-run"], 0)?;
    ensure!(plan.units("restart") == ["shop-api.service"], "{plan}");
    ensure!(plan.units("stop") == ["shop-worker.service"], "{plan}");
    ensure!(main_pids(&host, &SHOP[1..])? == pids && generator_files(&host)? == files, "dry run changed things");

    // Invalid edit: every error with file:line:col on stderr, exit 1, nothing changed.
    let invalid = "[services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\nrestart = \"sometimes\"\n\n\
                   [services.api]\nexek = [\"/bin/true\"]\n";
    write_stack(&host, "shop", invalid)?;
    let bad = kapell_expect(&host, &["apply"], 1)?;
    ensure!(bad.stderr.contains("/etc/kapell/shop.toml:3:11:"), "error should point at `restart`:\n{bad}");
    ensure!(bad.stderr.contains("/etc/kapell/shop.toml:6:1:"), "error should point at `exek`:\n{bad}");
    ensure!(bad.stdout.is_empty(), "an invalid apply reported actions:\n{bad}");
    kapell_expect(&host, &["apply", "--dry-run"], 1)?;
    ensure!(main_pids(&host, &SHOP[1..])? == pids, "invalid apply changed processes");
    ensure!(generator_files(&host)? == files, "invalid apply changed unit files");

    // Unknown stack: refused (exit 2) with a hint.
    write_stack(&host, "shop", &shop("infinity", Some("infinity")))?;
    let unknown = kapell_expect(&host, &["apply", "shpo"], 2)?;
    ensure!(unknown.stderr.contains("did you mean shop"), "{unknown}");

    // A limited apply would reload another stack's edit with nobody restarting it: refused.
    write_stack(&host, "other", "[services.x]\nexec = [\"/bin/sleep\", \"infinity\"]\n")?;
    kapell_expect(&host, &["apply", "other"], 0)?;
    let files = generator_files(&host)?;
    write_stack(&host, "other", "[services.x]\nexec = [\"/bin/sleep\", \"12345\"]\n")?;
    write_stack(&host, "shop", &shop("54321", Some("infinity")))?;
    let conflict = kapell_expect(&host, &["apply", "shop"], 2)?;
    ensure!(conflict.stderr.contains("stack other: other-x.service changed"), "{conflict}");
    ensure!(main_pids(&host, &SHOP[1..])? == pids, "refused apply changed processes");
    ensure!(generator_files(&host)? == files, "refused apply changed unit files");
    let both = kapell_expect(&host, &["apply", "shop", "other"], 0)?;
    let mut restarted = both.units("restarted");
    restarted.sort();
    ensure!(restarted == ["other-x.service", "shop-api.service"], "{both}");

    // Another config dir than the generator's is refused: it would stop the real stacks.
    let elsewhere = kapell_expect(&host, &["--config-dir", "/tmp", "apply"], 2)?;
    ensure!(elsewhere.stderr.contains("generator reads the stacks in /etc/kapell"), "{elsewhere}");

    // Without the generator, systemd would never see the units: apply says so and does nothing.
    // (The host's generator is a bind mount on this file; removing the file from outside
    // detaches the mount inside the host, as Linux does for a mount on a removed file.)
    std::fs::remove_file(host.root().join("usr/lib/systemd/system-generators/kapell-generator"))?;
    write_stack(&host, "shop", &shop("infinity", Some("infinity")))?;
    let pids = main_pids(&host, &SHOP[1..])?;
    let no_gen = kapell_expect(&host, &["apply"], 3)?;
    ensure!(no_gen.stderr.contains("kapell-generator is not installed"), "{no_gen}");
    ensure!(main_pids(&host, &SHOP[1..])? == pids, "apply without generator changed processes");

    drop(host);
    footprint.assert_gone()
}

/// `kapell status --json` and the table report each unit (each replica) with systemd's state;
/// `kapell logs` shows what the service printed, for every instance.
#[test]
fn status_and_logs_report_what_systemd_knows() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);
    write_stack(
        &host,
        "web",
        "[services.migrate]\nexec = [\"/bin/sh\", \"-c\", \"echo migrated\"]\ntype = \"oneshot\"\n\n\
         [services.app]\nexec = [\"/bin/sh\", \"-c\", \"echo hello from app; exec sleep infinity\"]\n\
         requires = [\"migrate\"]\nreplicas = 2\n",
    )?;
    kapell_expect(&host, &["apply"], 0)?;

    let json = kapell_expect(&host, &["status", "--json"], 0)?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).with_context(|| format!("{json}"))?;
    let units: Vec<&str> = rows.iter().filter_map(|r| r["unit"].as_str()).collect();
    ensure!(units == ["web-migrate.service", "web-app@1.service", "web-app@2.service"], "units {units:?}\n{json}");
    for row in &rows {
        ensure!(row["stack"] == "web" && row["active"] == "active" && row["load"] == "loaded", "{row}");
        ensure!(row["kind"] == "native" && row["health"].is_null() && row["restarts"] == 0, "{row}");
        ensure!(row["since"].as_str().is_some_and(|s| s.starts_with("20") && s.ends_with('Z')), "{row}");
    }
    ensure!(rows[0]["sub"] == "exited" && rows[0]["main_pid"].is_null(), "oneshot row {}", rows[0]);
    for row in &rows[1..] {
        ensure!(row["service"] == "app" && row["sub"] == "running", "{row}");
        ensure!(row["main_pid"].as_u64().is_some_and(|p| p > 1), "{row}");
    }

    let table = kapell_expect(&host, &["status", "web"], 0)?;
    let lines: Vec<&str> = table.stdout.lines().collect();
    ensure!(lines.len() == 4, "header and three units:\n{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    ensure!(header == ["STACK", "SERVICE", "UNIT", "ACTIVE", "SUB", "HEALTH", "SINCE", "RESTARTS"], "{table}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    ensure!(row[..6] == ["web", "app", "web-app@1.service", "active", "running", "-"], "{table}");
    kapell_expect(&host, &["status", "nope"], 2)?;

    eventually("both replicas' output in `kapell logs`", Duration::from_secs(10), || {
        let logs = kapell_expect(&host, &["logs", "web.app"], 0)?;
        Ok(logs.stdout.matches("hello from app").count() == 2)
    })?;
    let migrate = kapell_expect(&host, &["logs", "web.migrate"], 0)?;
    ensure!(migrate.stdout.contains("migrated") && !migrate.stdout.contains("hello from app"), "{migrate}");
    let typo = kapell_expect(&host, &["logs", "web.ap"], 2)?;
    ensure!(typo.stderr.contains("did you mean web.app"), "{typo}");

    // A unit that fails to start is reported by apply (exit 3), the others still start.
    write_stack(
        &host,
        "broken",
        "[services.fails]\nexec = [\"/bin/false\"]\ntype = \"oneshot\"\nrestart = \"no\"\n\n\
         [services.fine]\nexec = [\"/bin/sleep\", \"infinity\"]\n",
    )?;
    let broken = kapell_expect(&host, &["apply"], 3)?;
    ensure!(broken.stdout.contains("FAILED    broken-fails.service"), "{broken}");
    ensure!(broken.stdout.contains("journalctl -u broken-fails.service"), "{broken}");
    ensure!(broken.units("started").contains(&"broken-fine.service".to_string()), "{broken}");
    ensure!(broken.stderr.contains("1 unit failed"), "{broken}");
    let json = kapell_expect(&host, &["status", "--json", "broken"], 0)?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout)?;
    ensure!(rows[0]["unit"] == "broken-fails.service" && rows[0]["active"] == "failed", "{json}");

    drop(host);
    footprint.assert_gone()
}

/// With stacks in /etc/kapell before boot, the real systemd runs the generator at boot: the
/// stack target is active and a oneshot `migrate` finished before `web` started. After an edit,
/// `systemctl daemon-reload` alone brings in the new units.
#[test]
fn generator_at_boot_orders_services_and_daemon_reload_picks_up_edits() -> Result<()> {
    let stack = "[services.migrate]\nexec = [\"/bin/sh\", \"-c\", \"sleep 1; echo migrated\"]\ntype = \"oneshot\"\n\n\
                 [services.web]\nexec = [\"/bin/sleep\", \"infinity\"]\nrequires = [\"migrate\"]\n";
    let host = Host::builder()
        .kapell(KAPELL)
        .install_file("/etc/kapell/todo.toml", stack, 0o644)
        .install_file(
            "/etc/kapell/idle.toml",
            "enable = false\n\n[services.x]\nexec = [\"/bin/sleep\", \"infinity\"]\n",
            0o644,
        )
        .boot()?;
    let footprint = Footprint::new().host(&host);

    ensure_active(&host, &["todo.target", "todo-migrate.service", "todo-web.service"])?;
    ensure!(host.show("todo-migrate.service", "SubState")? == "exited", "migrate should have run to completion");
    let migrate_done: u64 = host.show("todo-migrate.service", "ExecMainExitTimestampMonotonic")?.parse()?;
    let web_start: u64 = host.show("todo-web.service", "ExecMainStartTimestampMonotonic")?.parse()?;
    ensure!(
        migrate_done > 0 && migrate_done <= web_start,
        "web started at {web_start} before migrate ended at {migrate_done}"
    );
    ensure!(
        host.show("todo-web.service", "SourcePath")? == "/etc/kapell/todo.toml",
        "units should name their stack file"
    );
    // `enable = false`: generated, but not started at boot.
    ensure!(host.show("idle.target", "LoadState")? == "loaded", "idle stack not generated");
    ensure!(host.show("idle.target", "ActiveState")? == "inactive", "a disabled stack started at boot");

    let edited = format!("{stack}\n[services.cache]\nexec = [\"/bin/sleep\", \"4242\"]\n");
    write_stack(&host, "todo", &edited)?;
    ensure!(host.show("todo-cache.service", "LoadState")? == "not-found", "cache exists before the reload");
    host.systemctl_ok(&["daemon-reload"])?;
    ensure!(host.show("todo-cache.service", "LoadState")? == "loaded", "reload did not bring in the new unit");
    ensure!(host.show("todo-cache.service", "ExecStart")?.contains("4242"), "new unit has the wrong command");
    ensure!(host.show("todo.target", "Wants")?.contains("todo-cache.service"));
    // And `kapell apply` after a hand reload starts what never ran, restarting nothing.
    let run = kapell_expect(&host, &["apply"], 0)?;
    let mut started = run.units("started");
    started.sort();
    ensure!(started == ["idle-x.service", "idle.target", "todo-cache.service"], "{run}");
    ensure!(run.units("restarted").is_empty(), "{run}");
    ensure_active(&host, &["todo-cache.service", "idle.target"])?;

    drop(host);
    footprint.assert_gone()
}

/// Another generator that writes a unit with the name of one of kapell's (here a wrapper in
/// /etc/systemd/system-generators, which takes the packaged generator's name, writes
/// `clash-web.service` and then runs kapell's): kapell leaves that unit alone and generates
/// nothing of its stack, at boot and at daemon-reload, so no target of kapell's starts the other
/// generator's unit; the other stacks run.
#[test]
fn a_stack_whose_unit_another_generator_wrote_is_not_generated() -> Result<()> {
    let other = "#!/bin/sh\n\
                 printf '[Unit]\\nDescription=another generator\\n[Service]\\nExecStart=/bin/sleep 777\\n' \
                 > \"$1/clash-web.service\"\n\
                 exec /usr/lib/systemd/system-generators/kapell-generator \"$@\"\n";
    let clash = "[services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\n\n\
                 [services.web]\nexec = [\"/bin/sleep\", \"infinity\"]\nrequires = [\"db\"]\n";
    let host = Host::builder()
        .kapell(KAPELL)
        .install_file("/etc/kapell/clash.toml", clash, 0o644)
        .install_file("/etc/kapell/todo.toml", "[services.web]\nexec = [\"/bin/sleep\", \"infinity\"]\n", 0o644)
        .install_file("/etc/systemd/system-generators/kapell-generator", other, 0o755)
        .boot()?;
    let footprint = Footprint::new().host(&host);

    for moment in ["boot", "daemon-reload"] {
        if moment == "daemon-reload" {
            host.systemctl_ok(&["daemon-reload"])?;
        }
        ensure_active(&host, &["todo.target", "todo-web.service"])?;
        ensure!(host.show("clash-web.service", "Description")? == "another generator", "{moment}: not the other unit");
        ensure!(
            host.show("clash-web.service", "ActiveState")? == "inactive",
            "{moment}: something started the other generator's unit"
        );
        for unit in ["clash.target", "clash-db.service"] {
            ensure!(host.show(unit, "LoadState")? == "not-found", "{moment}: {unit} was generated beside the clash");
        }
        let files = host.exec_ok(&["ls", "-R", "/run/systemd/generator"])?;
        ensure!(!files.contains("clash.target") && !files.contains("clash-db"), "{moment}: {files}");
    }

    drop(host);
    footprint.assert_gone()
}

/// `db` with `replicas` instances, and `web`, which requires `db` (`web_arg`: its `sleep`).
fn farm(replicas: u32, web_arg: &str) -> String {
    format!(
        "[services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\nreplicas = {replicas}\n\n\
         [services.web]\nexec = [\"/bin/sleep\", \"{web_arg}\"]\nrequires = [\"db\"]\n"
    )
}

fn db(i: u32) -> String {
    format!("farm-db@{i}.service")
}

/// Scaling a service starts and stops its instances and nothing else: the service that requires
/// it keeps its process. Its `Requires=` lists the instances, a change the reload alone applies;
/// and a lowered count stops the extra instance after the reload, when no `Requires=` names it
/// any more (stopped before, systemd would stop `web` with it).
#[test]
fn scaling_a_dependency_keeps_its_dependents_running() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);
    write_stack(&host, "farm", &farm(3, "infinity"))?;
    kapell_expect(&host, &["apply"], 0)?;
    let web = "farm-web.service".to_string();
    let first = main_pids(&host, &[&web, &db(1), &db(2), &db(3)])?;

    write_stack(&host, "farm", &farm(2, "infinity"))?;
    let down = kapell_expect(&host, &["apply"], 0)?;
    ensure!(down.units("stopped") == [db(3)], "only db@3 should stop:\n{down}");
    ensure!(down.units("restarted").is_empty() && down.units("started").is_empty(), "{down}");
    ensure!(down.units("updated").contains(&web), "web's new dependencies should be loaded:\n{down}");
    ensure!(host.show(&db(3), "ActiveState")? == "inactive", "db@3 still runs");
    let kept = main_pids(&host, &[&web, &db(1), &db(2)])?;
    ensure!(kept.iter().all(|(unit, pid)| first[unit] == *pid), "scaling down moved processes: {first:?} -> {kept:?}");
    ensure!(!host.show(&web, "Requires")?.contains(&db(3)), "web still requires db@3");

    write_stack(&host, "farm", &farm(4, "infinity"))?;
    let up = kapell_expect(&host, &["apply"], 0)?;
    let mut started = up.units("started");
    started.sort();
    ensure!(started == [db(3), db(4)], "db@3 and db@4 should start:\n{up}");
    ensure!(up.units("restarted").is_empty() && up.units("stopped").is_empty(), "{up}");
    ensure!(host.show(&web, "Requires")?.contains(&db(4)), "web does not require db@4");
    // Later applies and a few seconds find nothing else to do, and move nothing.
    let pids = main_pids(&host, &[&web, &db(1), &db(2), &db(3), &db(4)])?;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        let again = kapell_expect(&host, &["apply"], 0)?;
        ensure!(again.stdout.contains("nothing to do"), "{again}");
    }
    ensure!(main_pids(&host, &[&web, &db(1), &db(2), &db(3), &db(4)])? == pids, "processes moved after scaling");
    ensure!(pids[&web] == first[&web], "web was restarted by scaling db");

    // A change of web's own command still restarts it, and only it.
    write_stack(&host, "farm", &farm(4, "99999"))?;
    let edit = kapell_expect(&host, &["apply"], 0)?;
    ensure!(edit.units("restarted") == [web.clone()], "{edit}");

    remove_stack(&host, "farm")?;
    kapell_expect(&host, &["apply"], 0)?;
    drop(host);
    footprint.assert_gone()
}

/// A unit that refuses to stop holds the apply back before the reload: reloaded away, its file
/// would be gone while it runs on, and the next apply would no longer know of it. Once it is
/// stopped, the next apply carries the rest out.
#[test]
fn a_unit_that_does_not_stop_holds_the_reload_back() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);
    let stack = |keep_arg: &str, stuck: bool| {
        let mut text = format!("[services.keep]\nexec = [\"/bin/sleep\", \"{keep_arg}\"]\n");
        if stuck {
            text.push_str(
                "\n[services.stuck]\nexec = [\"/bin/sleep\", \"infinity\"]\n\
                 [services.stuck.systemd.Unit]\nRefuseManualStop = true\n",
            );
        }
        text
    };
    write_stack(&host, "mule", &stack("infinity", true))?;
    kapell_expect(&host, &["apply"], 0)?;
    let keep = main_pids(&host, &["mule-keep.service"])?;

    // `stuck` removed and `keep` changed: the stop is refused, and nothing else happens.
    write_stack(&host, "mule", &stack("99999", false))?;
    let held = kapell(&host, &["apply"])?;
    ensure!(held.code != Some(0), "apply should fail:\n{held}");
    ensure!(held.stdout.contains("FAILED") && held.stdout.contains("mule-stuck.service"), "{held}");
    ensure!(held.stderr.contains("systemd was not reloaded"), "{held}");
    ensure!(!held.stdout.contains("reloaded"), "{held}");
    ensure!(host.show("mule-stuck.service", "LoadState")? == "loaded", "stuck lost its unit file");
    ensure_active(&host, &["mule-stuck.service"])?;
    ensure!(main_pids(&host, &["mule-keep.service"])? == keep, "keep was restarted:\n{held}");
    let again = kapell(&host, &["apply"])?;
    ensure!(
        again.code != Some(0) && again.stdout.contains("mule-stuck.service"),
        "the stop is not tried again:\n{again}"
    );

    // The operator stops it another way; the next apply does the rest.
    host.systemctl_ok(&["kill", "mule-stuck.service"])?;
    eventually("stuck to stop", Duration::from_secs(10), || {
        Ok(host.show("mule-stuck.service", "ActiveState")? != "active")
    })?;
    let done = kapell_expect(&host, &["apply"], 0)?;
    ensure!(done.units("restarted") == ["mule-keep.service"], "{done}");
    ensure_gone(&host, "mule-stuck.service")?;

    remove_stack(&host, "mule")?;
    kapell_expect(&host, &["apply"], 0)?;
    drop(host);
    footprint.assert_gone()
}

#[test]
fn help_documents_the_commands() -> Result<()> {
    for command in ["apply", "status", "logs"] {
        let out = std::process::Command::new(KAPELL).args([command, "--help"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("Usage:") {
            bail!("kapell {command} --help failed: {text}");
        }
    }
    Ok(())
}

/// A stack of `n` native services `<prefix>0..`, no dependencies; `changed` gets another argument.
fn many(n: usize, changed: Option<usize>) -> String {
    let mut text = String::with_capacity(n * 64);
    for i in 0..n {
        let arg = if changed == Some(i) { 2_000_000 + i } else { 1_000_000 + i };
        text.push_str(&format!("[services.s{i}]\nexec = [\"/bin/sleep\", \"{arg}\"]\n\n"));
    }
    text
}

/// `Id=MainPID` of every loaded service matching `patterns`, from one `systemctl show`; each
/// must be active with a main process.
fn pids_matching(host: &Host, patterns: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut args = vec!["show", "--property=Id,MainPID,ActiveState"];
    args.extend_from_slice(patterns);
    let text = host.systemctl_ok(&args)?;
    let mut pids = BTreeMap::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let field = |key: &str| block.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().to_string();
        let (id, pid, state) = (field("Id="), field("MainPID="), field("ActiveState="));
        ensure!(state == "active" && pid != "0", "{id} is {state} (MainPID {pid})");
        pids.insert(id, pid);
    }
    Ok(pids)
}

/// Hundreds of units in one apply (issue: a start per unit with nobody reading the `JobRemoved`
/// signals stalled zbus's 64-message queue past ~64 units, and reading 500 unit states at once
/// hit the bus's limit of pending replies). 500 services cold, a no-op, one changed, then 2,000
/// units across four stacks: every apply finishes, every unit runs, only what changed restarts.
#[test]
fn apply_handles_thousands_of_units() -> Result<()> {
    let host = boot()?;
    let footprint = Footprint::new().host(&host);

    write_stack(&host, "big", &many(500, None))?;
    let cold = kapell_timed(&host, 0)?;
    ensure!(cold.units("started").len() == 501, "500 services and the target should start:\n{cold}");
    let before = pids_matching(&host, &["big-*.service"])?;
    ensure!(before.len() == 500, "{} of 500 services run", before.len());
    eprintln!("timing: apply 500 services cold {:?}", cold.took);

    let noop = kapell_timed(&host, 0)?;
    ensure!(noop.stdout.contains("nothing to do: 1 stack and 500 units up to date"), "{noop}");
    eprintln!("timing: apply 500 services no-op {:?}", noop.took);

    write_stack(&host, "big", &many(500, Some(7)))?;
    let one = kapell_timed(&host, 0)?;
    ensure!(one.units("restarted") == ["big-s7.service"], "only s7 should restart:\n{one}");
    ensure!(one.units("started").is_empty(), "{one}");
    let after = pids_matching(&host, &["big-*.service"])?;
    let moved: Vec<&String> = before.keys().filter(|u| before[*u] != after[*u]).collect();
    ensure!(moved == ["big-s7.service"], "restarted: {moved:?}");
    eprintln!("timing: apply 500 services, one changed {:?}", one.took);

    for stack in ["more1", "more2", "more3"] {
        write_stack(&host, stack, &many(500, None))?;
    }
    let wide = kapell_timed(&host, 0)?;
    ensure!(wide.units("started").len() == 3 * 501, "1,500 services and 3 targets should start");
    ensure!(wide.units("restarted").is_empty(), "{wide}");
    let all = pids_matching(&host, &["big-*.service", "more1-*.service", "more2-*.service", "more3-*.service"])?;
    ensure!(all.len() == 2000, "{} of 2,000 services run", all.len());
    ensure!(pids_matching(&host, &["big-*.service"])? == after, "adding stacks restarted services of big");
    eprintln!("timing: apply 1,500 more services across 3 stacks (2,000 in all) {:?}", wide.took);

    // 1,000 stops in one apply: more jobs than the bus lets systemd watch at once (512 match
    // rules per connection), so they must go in rounds, and every one must succeed.
    remove_stack(&host, "big")?;
    remove_stack(&host, "more1")?;
    let gone = kapell_timed(&host, 0)?;
    ensure!(gone.units("stopped").len() == 1002, "1,000 services and 2 targets should stop:\n{gone}");
    ensure!(!gone.stdout.contains("FAILED"), "{gone}");
    eprintln!("timing: apply stopping 1,000 services of 2 deleted stacks {:?}", gone.took);

    drop(host);
    footprint.assert_gone()
}

/// `kapell apply` inside the host, killed after 10 minutes (so a hang fails rather than stalls),
/// expected to exit `code`.
fn kapell_timed(host: &Host, code: i32) -> Result<Run> {
    let start = Instant::now();
    let out = host.exec(&["timeout", "600", "kapell", "apply"])?;
    let run = Run::from(out, start.elapsed());
    ensure!(run.code == Some(code), "`kapell apply` should exit {code}:\n{run}");
    Ok(run)
}
