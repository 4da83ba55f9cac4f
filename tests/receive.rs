//! `kapell receive` against hostile requests on a booted systemd host (nspawn), driven through
//! nsenter with the request on stdin, as sshd would run it. For every request it must refuse,
//! the reply names the problem and nothing under /etc/kapell/received moved: the listing (names,
//! types, link targets, contents) and the record of the last real install are byte-identical
//! before and after. Needs root and the packages of .ci/deps; nothing is mocked.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kapell::fleet::protocol::{HostSet, Reply};
use kapell::render::OutputFile;
use sha2::{Digest, Sha256};
use support::{Footprint, Host};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

fn kapell_unit(stack: &str, extra: &str) -> String {
    format!("[Unit]\nDescription=receive test\nX-Kapell-Stack={stack}\n{extra}")
}

fn unit(name: &str) -> OutputFile {
    OutputFile::Unit { name: name.into(), text: kapell_unit("evil", "") }
}

fn install(files: &[OutputFile]) -> String {
    install_set(&HostSet::from_rendered(files))
}

fn install_set(set: &HostSet) -> String {
    serde_json::json!({ "version": 1, "request": "install", "set": set, "known": [], "force": true }).to_string()
}

/// The good set: a stack target and a service that sleeps.
fn good_set() -> HostSet {
    HostSet::from_rendered(&[
        OutputFile::Unit {
            name: "good.target".into(),
            text: kapell_unit("good", "Wants=good-sleep.service\n[Install]\nWantedBy=multi-user.target\n"),
        },
        OutputFile::Unit {
            name: "good-sleep.service".into(),
            text: kapell_unit(
                "good",
                "X-Kapell-Service=sleep\nPartOf=good.target\n[Service]\nExecStart=/bin/sleep 7000000\n",
            ),
        },
        OutputFile::link("multi-user.target.wants/good.target", "../good.target"),
        OutputFile::link("good.target.requires/good-sleep.service", "../good-sleep.service"),
    ])
}

/// Runs `kapell receive` in `host` with `request` on stdin, under `/usr/bin/time -v` (outside the
/// host: it reports the largest resident size of nsenter and what it ran, kapell).
fn receive(host: &Host, request: &[u8]) -> Result<(Output, Reply, u64)> {
    let inner = host.command(&["kapell", "receive"])?;
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(inner.get_program()).args(inner.get_args()).env_clear();
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            cmd.env(key, value);
        }
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let body = request.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &body));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let peak_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no peak memory from /usr/bin/time:\n{stderr}"))?;
    let reply: Reply = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("no reply: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)))?;
    Ok((out, reply, peak_kib))
}

/// Every entry under `dir`, sorted: path, type, and the link target or the content's hash.
fn listing(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(dir)?.to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&path)?.display()));
            } else if kind.is_dir() {
                out.push(format!("{rel}/"));
                todo.push(path);
            } else {
                out.push(format!("{rel} {}", hex(&Sha256::digest(std::fs::read(&path)?))));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request the peer must refuse: the reply's error contains `want`.
struct Hostile {
    what: &'static str,
    request: Vec<u8>,
    want: String,
}

fn hostile(what: &'static str, request: impl Into<Vec<u8>>, want: &str) -> Hostile {
    Hostile { what, request: request.into(), want: want.to_string() }
}

fn matrix() -> Vec<Hostile> {
    let long = format!("{}.service", "x".repeat(300));
    let mut cases = vec![
        hostile("empty name", install(&[unit("")]), "an empty name is not a systemd unit name"),
        hostile("store link name", install(&[unit("current")]), "\"current\" is not a systemd unit name"),
        hostile("store link name", install(&[unit("confirmed")]), "\"confirmed\" is not a systemd unit name"),
        hostile("store record", install(&[unit("pending.json")]), "`.json` is not a unit type"),
        hostile("store record", install(&[unit("last-install.json")]), "`.json` is not a unit type"),
        hostile("staging name", install(&[unit(".staging-g1-x.service")]), "it starts with `.`"),
        hostile("dot-dot", install(&[unit("..")]), "\"..\" is not a systemd unit name"),
        hostile("slash", install(&[unit("a/../../etc/passwd.service")]), "'/' is not allowed"),
        hostile("NUL", install(&[unit("a\0.service")]), "'\\0' is not allowed"),
        hostile("newline", install(&[unit("a\n.service")]), "'\\n' is not allowed"),
        hostile("escape", install(&[unit("a\u{1b}[2J.service")]), "'\\u{1b}' is not allowed"),
        hostile("over-long", install(&[unit(&long)]), "longer than 255 bytes"),
        hostile("no suffix", install(&[unit("x.wants")]), "`.wants` is not a unit type"),
        hostile(
            "unit and links dir of one name",
            install(&[unit("a.target"), unit("x.wants"), OutputFile::link("x.wants/a.target", "../a.target")]),
            "`.wants` is not a unit type",
        ),
        hostile(
            "link to a unit outside the set",
            install(&[unit("a.target"), OutputFile::link("multi-user.target.wants/ssh.service", "../ssh.service")]),
            "\"ssh.service\" is not a unit of the set",
        ),
        hostile(
            "link elsewhere",
            install(&[unit("a.target"), OutputFile::link("multi-user.target.wants/a.target", "/etc/shadow")]),
            "it must point at \"../a.target\"",
        ),
        hostile(
            "link outside .wants/.requires",
            install(&[unit("a.target"), OutputFile::link("a.target.d/a.target", "../a.target")]),
            "\"a.target.d\" is not a .wants/ or .requires/ directory",
        ),
        hostile(
            "nested link",
            install(&[unit("a.target"), OutputFile::link("m.target.wants/x/a.target", "../a.target")]),
            "\"x/a.target\" is not a systemd unit name",
        ),
        hostile("systemd's root slice", install(&[unit("-.slice")]), "-.slice would shadow systemd's -.slice"),
        hostile("systemd's init scope", install(&[unit("init.scope")]), "init.scope would shadow systemd's init.scope"),
        hostile(
            "systemd's system slice",
            install(&[unit("system.slice")]),
            "system.slice would shadow systemd's system.slice",
        ),
        hostile(
            "an instance of a packaged template",
            install(&[unit("getty@tty1.service")]),
            "getty@tty1.service would shadow systemd's getty@tty1.service (from /",
        ),
        hostile(
            "a template with a transient instance",
            install(&[unit("probe@.service")]),
            "probe@.service would take over systemd's probe@1.service (from /run/systemd/transient/probe@1.service)",
        ),
        hostile("a packaged unit file", install(&[unit("ssh.service")]), "ssh.service would shadow /"),
        hostile(
            "a unit the operator masked",
            install(&[unit("vendor-masked.service")]),
            "vendor-masked.service is masked by /etc/systemd/system/vendor-masked.service, which kapell does not own",
        ),
        hostile(
            "a unit file behind a mask of the host's own unit",
            install(&[unit("good-sleep.service")]),
            "good-sleep.service would shadow /run/systemd/system/good-sleep.service",
        ),
        hostile(
            "request kind by index",
            r#"{"version":1,"request":3}"#,
            "invalid type: integer `3`, expected a string",
        ),
        hostile(
            "request kind by index (install)",
            r#"{"version":1,"request":0,"set":{"files":{},"hash":""}}"#,
            "invalid type: integer `0`, expected a string",
        ),
        hostile("unknown field", r#"{"version":1,"request":"status","x":1}"#, "unknown field `x`"),
        hostile(
            "duplicate key",
            r#"{"version":1,"request":"status","request":"rollback"}"#,
            "duplicate field `request`",
        ),
        hostile(
            "version as a string",
            r#"{"version":"1","request":"status"}"#,
            "the request's version is malformed: invalid type: string \"1\", expected a fleet protocol version",
        ),
        hostile(
            "fractional version",
            r#"{"version":1.0,"request":"status"}"#,
            "invalid type: floating point `1.0`, expected a fleet protocol version",
        ),
        hostile("not json", "{\"version\":1,", "the request is not valid JSON"),
    ];
    // A file listed twice (JSON objects may repeat keys; serde's maps keep the last one).
    let set = good_set();
    let text = install_set(&set);
    let first = text.find("\"good.target\"").expect("good.target in the request");
    let end = text[first..].find("},").expect("end of the file") + first + 2;
    let doubled = format!("{}{}{}", &text[..end], &text[first..end], &text[end..]);
    cases.push(hostile("file listed twice", doubled, "the set names the file \"good.target\" twice"));
    cases
}

/// The 66 MB status request of millions of unknown keys that peaked at 1.85 GB.
fn many_unknown_keys() -> Vec<u8> {
    let mut text = String::from(r#"{"version":1,"request":"status""#);
    let mut i = 0u64;
    while text.len() < 66_000_000 {
        text.push_str(&format!(",\"k{i}\":0"));
        i += 1;
    }
    text.push('}');
    text.into_bytes()
}

/// The largest request the peer accepts: an install just under the 64 MiB cap, one kapell
/// target whose text is mostly comment lines; and the set's hash.
fn largest_install() -> (Vec<u8>, String) {
    let mut text = kapell_unit("big", "");
    let line = format!("# {}\n", "x".repeat(1000));
    while text.len() + line.len() < 63 * 1024 * 1024 {
        text.push_str(&line);
    }
    let set = HostSet::from_rendered(&[OutputFile::Unit { name: "big.target".into(), text }]);
    (install_set(&set).into_bytes(), set.hash)
}

#[test]
fn receive_refuses_hostile_requests_and_changes_nothing() -> Result<()> {
    let mut host = Host::builder().name("recv").kapell(KAPELL).start()?;
    host.wait_running()?;
    let footprint = Footprint::new().host(&host);
    let received = host.root().join("etc/kapell/received");

    // A real install first: there is a current set and a record of it.
    let (out, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
    ensure!(reply.error.is_none() && out.status.code() == Some(0), "{reply:?}");
    ensure!(host.show("good-sleep.service", "ActiveState")? == "active", "the good set does not run");
    // The `.requires/` link reached systemd through the generator.
    let requires = host.show("good.target", "Requires")?;
    ensure!(requires.contains("good-sleep.service"), "good.target requires {requires:?}");
    // A transient instance of a template no file defines (what only systemd knows).
    host.exec_ok(&["systemd-run", "--unit=probe@1.service", "/bin/sleep", "7000000"])?;

    // Masks: the operator's, of a unit kapell does not own; and one of the host's own unit (drift,
    // which an install lifts) with a unit file that is not kapell's behind it.
    let masks = [
        "ln -s /dev/null /etc/systemd/system/vendor-masked.service",
        "ln -s /dev/null /etc/systemd/system/good-sleep.service",
        "mkdir -p /run/systemd/system && printf '[Service]\\nExecStart=/bin/true\\n' > /run/systemd/system/good-sleep.service",
    ];
    for mask in masks {
        host.exec_ok(&["sh", "-c", mask])?;
    }

    let before = listing(&received)?;
    ensure!(before.iter().any(|l| l.starts_with("last-install.json ")), "{before:#?}");
    let mut failures = Vec::new();
    for case in matrix() {
        let (out, reply, _) = receive(&host, &case.request)?;
        let error = reply.error.clone().unwrap_or_default();
        let after = listing(&received)?;
        // None of these is mended by sending the whole set.
        if !error.contains(&case.want) || out.status.code() != Some(3) || after != before || reply.needs_whole_set {
            failures.push(format!(
                "{}: exit {:?}, error {error:?}, want {:?}; listing changed: {}",
                case.what,
                out.status.code(),
                case.want,
                after != before
            ));
        }
    }
    ensure!(failures.is_empty(), "{} of the hostile requests:\n{}", failures.len(), failures.join("\n"));
    ensure!(host.show("good-sleep.service", "ActiveState")? == "active", "the good set was touched");
    for path in [
        "/etc/systemd/system/vendor-masked.service",
        "/etc/systemd/system/good-sleep.service",
        "/run/systemd/system/good-sleep.service",
    ] {
        ensure!(host.exec(&["test", "-e", path])?.status.success(), "{path} was removed");
        host.exec_ok(&["rm", "-f", path])?;
    }

    // Requests that name what the host does not hold: refused, nothing changed, and the reply
    // asks for the whole set (the controller then sends it as an install).
    let good = good_set();
    let other_set = format!(r#"{{"version":1,"request":"repair","hash":"{}"}}"#, "0".repeat(64));
    let without_catalog = serde_json::json!({
        "version": 1, "request": "install", "set": HostSet { catalog: None, ..good.clone() },
        "known": [], "force": true, "same_catalog": true,
    });
    for (what, request, want) in [
        ("a repair of another set", other_set, "the repair was not carried out"),
        ("an install leaving out a catalog the host lacks", without_catalog.to_string(), "it has none"),
    ] {
        let (out, reply, _) = receive(&host, request.as_bytes())?;
        let error = reply.error.clone().unwrap_or_default();
        ensure!(error.contains(want) && out.status.code() == Some(3), "{what}: {reply:?}");
        ensure!(reply.needs_whole_set, "{what}: the reply does not ask for the whole set: {reply:?}");
        ensure!(listing(&received)? == before, "{what} changed the store");
    }

    // Bounded memory: the hostile status request and the largest install, side by side.
    let hostile = many_unknown_keys();
    let (_, reply, hostile_kib) = receive(&host, &hostile)?;
    ensure!(reply.error.as_deref().is_some_and(|e| e.contains("unknown field `k0`")), "{reply:?}");
    ensure!(listing(&received)? == before, "the 66 MB request changed the store");
    let (largest, largest_hash) = largest_install();
    let (out, reply, largest_kib) = receive(&host, &largest)?;
    ensure!(reply.error.is_none() && out.status.code() == Some(0), "the largest install: {reply:?}");
    eprintln!("| request | bytes | peak RSS of receive (MiB) |");
    eprintln!("|---|---|---|");
    eprintln!("| status, millions of unknown keys | {} | {} |", hostile.len(), hostile_kib / 1024);
    eprintln!("| install, one 63 MiB unit | {} | {} |", largest.len(), largest_kib / 1024);
    // The request's own bytes are read into memory (at most 64 MiB) and nothing more.
    ensure!(hostile_kib < 128 * 1024, "the hostile request took {hostile_kib} KiB");
    ensure!(largest_kib < 512 * 1024, "the largest install took {largest_kib} KiB");

    // The repair of the set the host runs is carried out, and asks for nothing more.
    let repair = format!(r#"{{"version":1,"request":"repair","hash":"{largest_hash}"}}"#);
    let (_, reply, _) = receive(&host, repair.as_bytes())?;
    ensure!(reply.error.is_none() && !reply.needs_whole_set, "the repair of the set the host runs: {reply:?}");

    drop(host);
    footprint.assert_gone()
}

/// `good_set` whose service takes `start_secs` to start (an `ExecStartPre=` that sleeps), running
/// `sleep <arg>`.
fn slow_set(start_secs: u32, arg: u32) -> HostSet {
    let mut files = good_set().to_rendered();
    for file in &mut files {
        if let OutputFile::Unit { name, text } = file
            && name == "good-sleep.service"
        {
            *text = kapell_unit(
                "good",
                &format!(
                    "X-Kapell-Service=sleep\nPartOf=good.target\n[Service]\nExecStartPre=/bin/sleep {start_secs}\n\
                     ExecStart=/bin/sleep {arg}\n"
                ),
            );
        }
    }
    HostSet::from_rendered(&files)
}

fn install_within(set: &HostSet, secs: u64) -> String {
    serde_json::json!({
        "version": 1, "request": "install", "set": set, "known": [], "force": true, "confirm_within": secs,
    })
    .to_string()
}

/// The generation `current` points at.
fn current_generation(host: &Host) -> Option<String> {
    let link = std::fs::read_link(host.root().join("etc/kapell/received/current")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// A set is pending, with its revert timer armed, from before `current` moves: a `kapell
/// receive` killed during a (slow) activation leaves a set that reverts on its own. And a slow
/// activation does not eat the controller's window: it is armed again once the set is up.
#[test]
fn a_confirm_window_opens_before_the_set_runs_and_outlasts_a_slow_activation() -> Result<()> {
    let mut host = Host::builder().name("recw").kapell(KAPELL).start()?;
    host.wait_running()?;
    let footprint = Footprint::new().host(&host);
    let received = host.root().join("etc/kapell/received");
    let (_, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
    ensure!(reply.error.is_none(), "{reply:?}");
    let confirmed = current_generation(&host).context("no current generation")?;

    // 1. A receive killed while the new set starts (its service takes 30 s).
    let slow = slow_set(30, 7_000_001);
    let mut child = host.command(&["kapell", "receive"])?.stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, install_within(&slow, 3).as_bytes())?;
    support::eventually("the slow set current", Duration::from_secs(20), || {
        Ok(current_generation(&host).is_some_and(|g| g != confirmed))
    })?;
    ensure!(received.join("pending.json").exists(), "the new set is current but not pending");
    let timers = host.systemctl_ok(&["list-units", "--all", "--plain", "--no-legend", "kapell-revert-*.timer"])?;
    ensure!(timers.contains("kapell-revert-"), "no revert timer while the set starts: {timers:?}");
    // Killed by the PID its lock records, while the service is still starting.
    let lock = host.exec_ok(&["cat", "/run/kapell/lock"])?;
    let pid = lock.strip_prefix("PID ").and_then(|t| t.split_whitespace().next()).context("no PID in the lock")?;
    support::eventually("the new set's service starting", Duration::from_secs(20), || {
        Ok(host.show("good-sleep.service", "ActiveState")? == "activating")
    })?;
    host.exec_ok(&["kill", "-KILL", pid])?;
    let _ = child.wait();
    support::eventually("the set of the killed receive reverted on its own", Duration::from_secs(30), || {
        Ok(current_generation(&host).as_deref() == Some(&confirmed)
            && host.show("good-sleep.service", "ExecStart")?.contains("7000000")
            && host.show("good-sleep.service", "ActiveState")? == "active")
    })?;
    let rejected = std::fs::read_to_string(received.join("rolled-back.json"))?;
    ensure!(rejected.contains(&slow.hash), "the reverted set is not recorded as rolled back: {rejected}");

    // 2. An activation (6 s) longer than the window (3 s): the window runs from the reply.
    let slow = slow_set(6, 7_000_002);
    let (_, reply, _) = receive(&host, install_within(&slow, 3).as_bytes())?;
    ensure!(reply.error.is_none() && reply.pending.is_some(), "{reply:?}");
    let generation = current_generation(&host).context("no current generation")?;
    // Read as soon as both are there: the confirmation below must come within the 3 s window.
    let mut timers = Vec::new();
    support::eventually("the revert timers' start in the journal", Duration::from_secs(2), || {
        timers = revert_timers_started(&host, &generation)?;
        Ok(timers.len() >= 2)
    })
    .with_context(|| format!("{timers:?}"))?;
    ensure!(timers.len() == 2, "a slow activation arms its window again once the set is up: {timers:?}");
    let confirm = format!(r#"{{"version":1,"request":"confirm","hash":"{}"}}"#, slow.hash);
    let (_, reply, _) = receive(&host, confirm.as_bytes())?;
    ensure!(reply.error.is_none() && reply.pending.is_none(), "the confirmation: {reply:?}");
    std::thread::sleep(Duration::from_secs(5));
    ensure!(
        host.show("good-sleep.service", "ExecStart")?.contains("7000002"),
        "a timer of the first arming reverted a confirmed set"
    );
    let timers = host.systemctl_ok(&["list-units", "--all", "--plain", "--no-legend", "kapell-revert-*"])?;
    ensure!(!timers.contains(".timer"), "revert timers left after the confirmation: {timers}");

    // 3. A quick activation (a tenth of the window or less) keeps the timer it has: arming again
    // would cost systemd a transient timer and a stop on every push.
    let quick = slow_set(0, 7_000_003);
    let (_, reply, _) = receive(&host, install_within(&quick, 30).as_bytes())?;
    ensure!(reply.error.is_none() && reply.pending.is_some(), "{reply:?}");
    let generation = current_generation(&host).context("no current generation")?;
    let timers = revert_timers_settled(&host, &generation, 1)?;
    ensure!(timers.len() == 1, "a quick activation armed its window more than once: {timers:?}");
    let armed = host.systemctl_ok(&["list-units", "--plain", "--no-legend", "kapell-revert-*.timer"])?;
    ensure!(armed.contains(&timers[0]), "the window's one timer is not running: {armed}");

    drop(host);
    footprint.assert_gone()
}

/// The revert timers systemd started for `generation`, once at least `expected` are in the journal
/// (systemd's lines reach it on journald's time), read again a second later, when a further one
/// would have had time to show.
fn revert_timers_settled(host: &Host, generation: &str, expected: usize) -> Result<Vec<String>> {
    support::eventually("the revert timers' start in the journal", Duration::from_secs(10), || {
        Ok(revert_timers_started(host, generation)?.len() >= expected)
    })?;
    std::thread::sleep(Duration::from_secs(1));
    revert_timers_started(host, generation)
}

/// The revert timers systemd started for `generation`, by name, from its journal.
fn revert_timers_started(host: &Host, generation: &str) -> Result<Vec<String>> {
    let prefix = format!("kapell-revert-{generation}-");
    let journal = host.exec_ok(&["journalctl", "_PID=1", "JOB_TYPE=start", "-o", "json", "--no-pager"])?;
    let mut names = Vec::new();
    for line in journal.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)?;
        if let Some(unit) = entry["UNIT"].as_str().filter(|u| u.starts_with(&prefix) && u.ends_with(".timer"))
            && !names.iter().any(|n| n == unit)
        {
            names.push(unit.to_string());
        }
    }
    Ok(names)
}

/// A local stack file with an error still claims its stack's name: while `/etc/kapell/good.toml`
/// does not parse, the fleet's stack `good` does not take its place, neither at `kapell receive`
/// nor at the generator's next run; the reply and the generator say why. Once the file is gone,
/// the fleet's stack runs at the next install. Then a valid local `good` takes the stack over at
/// `kapell apply` (its own command runs), and once its file is gone, `kapell apply` stops it and
/// runs the fleet's `good` (nothing else would before the next push), also when someone else
/// reloaded systemd in between, and when the local `good` ran from boot; a second apply does
/// nothing.
#[test]
fn a_local_stack_with_an_error_keeps_the_fleets_stack_of_its_name_out() -> Result<()> {
    let mut host = Host::builder().name("recb").kapell(KAPELL).start()?;
    host.wait_running()?;
    let footprint = Footprint::new().host(&host);
    let config = host.root().join("etc/kapell");
    std::fs::create_dir_all(&config)?;
    // Being edited: an unclosed table header.
    std::fs::write(config.join("good.toml"), "[services.sleep\nexec = \"/bin/sleep 7000000\"\n")?;

    let (out, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
    ensure!(reply.error.is_none() && out.status.code() == Some(0), "{reply:?}");
    let mut conflicts = reply.conflicts.clone();
    conflicts.sort();
    ensure!(conflicts == ["good-sleep.service", "good.target"], "the reply's conflicts: {reply:?}");
    for unit in ["good-sleep.service", "good.target"] {
        let state = host.show(unit, "LoadState")?;
        ensure!(state == "not-found", "{unit} is {state}: the fleet's stack took the broken local one's place");
    }
    // Nothing of the set runs, so the install had nothing to reload: the generator's part is
    // seen at a reload of the host's own.
    host.systemctl_ok(&["daemon-reload"])?;
    let listed = host.exec_ok(&["ls", "/run/systemd/generator"])?;
    let generator: Vec<&str> = listed.lines().filter(|n| n.starts_with("good")).collect();
    ensure!(generator.is_empty(), "the generator wrote {generator:?}");
    // The generator's words reach the console (nspawn gives the host no /dev/kmsg), which
    // nspawn copies to its log on its own time.
    let why = "kapell-generator: fleet unit good-sleep.service ignored: this host's own stack good has errors";
    let said = support::eventually("the generator's reason on the console", Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(host.log_path())?.contains(why))
    });
    said.with_context(|| std::fs::read_to_string(host.log_path()).unwrap_or_default())?;

    // Mended by removing the file: the fleet's stack runs at the next install.
    std::fs::remove_file(config.join("good.toml"))?;
    let (_, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
    ensure!(reply.error.is_none() && reply.conflicts.is_empty(), "{reply:?}");
    ensure!(host.show("good-sleep.service", "ActiveState")? == "active", "the fleet's stack does not run");

    // A local `good` of its own takes over, and gives the stack back to the fleet when it goes:
    // at once, after someone else's reload (the generator has the fleet's units by then), when
    // the local `good` ran from boot (no apply of this boot knows it: the generator's list of the
    // fleet's units says the loaded ones are local), and when a push comes before any apply
    // (after someone else's reload, too: the generator has the fleet's units, the local
    // processes run under their names).
    let rounds = [
        ("nothing", false),
        ("a reload", false),
        ("nothing", true),
        ("a push", false),
        ("a reload, then a push", false),
    ];
    for (between, from_boot) in rounds {
        std::fs::write(config.join("good.toml"), "[services.sleep]\nexec = [\"/bin/sleep\", \"7000111\"]\n")?;
        let local = if from_boot {
            host.reboot()?;
            "(booted)".to_string()
        } else {
            host.exec_ok(&["kapell", "apply"])?
        };
        ensure!(host.show("good-sleep.service", "ExecStart")?.contains("7000111"), "{local}");
        let local_pid = host.show("good-sleep.service", "MainPID")?;
        ensure!(local_pid != "0" && !local.contains("the fleet's set"), "{local}");
        std::fs::remove_file(config.join("good.toml"))?;
        let fleet_runs = || -> Result<bool> {
            Ok(host.show("good-sleep.service", "ActiveState")? == "active"
                && host.show("good-sleep.service", "ExecStart")?.contains("7000000"))
        };
        if between.starts_with("a reload") {
            host.systemctl_ok(&["daemon-reload"])?;
        }
        if between.ends_with("a push") {
            // The push runs the fleet's `good` in the local one's place, and the next apply
            // has nothing left to do with it: no second restart.
            let (_, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
            eprintln!("the push after the local stack good was removed: {:?}", reply.actions);
            ensure!(reply.error.is_none() && reply.conflicts.is_empty(), "{reply:?}");
            ensure!(fleet_runs()?, "the push does not run the fleet's good: {reply:?}");
            let pid = host.show("good-sleep.service", "MainPID")?;
            ensure!(pid != local_pid, "the push left the local process running: {reply:?}");
            let after = host.exec_ok(&["kapell", "apply"])?;
            ensure!(after.starts_with("nothing to do") && !after.contains("the fleet's set"), "{after}");
            ensure!(host.show("good-sleep.service", "MainPID")? == pid, "the apply restarted it:\n{after}");
            continue;
        }
        let released = host.exec_ok(&["kapell", "apply"])?;
        eprintln!(
            "$ kapell apply (the local stack good removed; between: {between}; from boot: {from_boot})\n{released}"
        );
        ensure!(released.contains("the fleet's set"), "{released}");
        ensure!(fleet_runs()?, "the fleet's good does not run:\n{released}");
        ensure!(host.show("good-sleep.service", "MainPID")? != local_pid, "the local process runs on:\n{released}");
        let again = host.exec_ok(&["kapell", "apply"])?;
        ensure!(again.starts_with("nothing to do") && !again.contains("the fleet's set"), "{again}");
    }

    // A local `good` that runs, whose file then gets an error: it still claims its name, so a
    // push leaves what it runs alone (the operator mends the file; `kapell apply` waits for that
    // too), and the fleet's `good` stays out.
    std::fs::write(config.join("good.toml"), "[services.sleep]\nexec = [\"/bin/sleep\", \"7000111\"]\n")?;
    host.exec_ok(&["kapell", "apply"])?;
    let local_pid = host.show("good-sleep.service", "MainPID")?;
    std::fs::write(config.join("good.toml"), "[services.sleep\nexec = [\"/bin/sleep\", \"7000111\"]\n")?;
    let (_, reply, _) = receive(&host, install_set(&good_set()).as_bytes())?;
    ensure!(reply.error.is_none(), "{reply:?}");
    let untouched = host.show("good-sleep.service", "ActiveState")? == "active"
        && host.show("good-sleep.service", "ExecStart")?.contains("7000111")
        && host.show("good-sleep.service", "MainPID")? == local_pid;
    ensure!(untouched, "the push stopped or replaced the local stack being edited: {:?}", reply.actions);
    std::fs::remove_file(config.join("good.toml"))?;
    let released = host.exec_ok(&["kapell", "apply"])?;
    ensure!(released.contains("the fleet's set"), "{released}");

    drop(host);
    footprint.assert_gone()
}
