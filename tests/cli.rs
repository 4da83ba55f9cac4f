//! The command line and the generator, run as processes: exit codes, `--json`, graphs, the
//! generator's contract (systemd.generator(7)) and inputs too big or too strange to keep as
//! golden files.

use std::path::Path;
use std::process::{Command, Output};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

fn kapell(config: &Path, args: &[&str]) -> Output {
    let empty = tempfile::tempdir().expect("tempdir");
    kapell_with_received(config, args, empty.path())
}

/// `kapell` on a host whose received sets are in `received` (not this machine's).
fn kapell_with_received(config: &Path, args: &[&str], received: &Path) -> Output {
    let empty = tempfile::tempdir().expect("tempdir");
    Command::new(KAPELL)
        .env("KAPELL_UNIT_PATH", empty.path())
        .env("KAPELL_RECEIVED_DIR", received)
        .env_remove("KAPELL_CONFIG_DIR")
        .arg("--config-dir")
        .arg(config)
        .args(args)
        .output()
        .expect("run kapell")
}

/// The generator, as the packages install it and systemd runs it.
const GENERATOR: &str = env!("CARGO_BIN_EXE_kapell-generator");

/// Runs the generator, as systemd does.
fn generator(config: &Path, out: &Path) -> Output {
    let empty = tempfile::tempdir().expect("tempdir");
    generator_with_fleet(config, out, empty.path())
}

/// A received-sets directory whose `current` set is `fleet`.
fn received_dir(fleet: &Path) -> tempfile::TempDir {
    let received = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(fleet, received.path().join("current")).expect("current link");
    received
}

/// The generator with `fleet` as the received set (`<received dir>/current` links to it).
fn generator_with_fleet(config: &Path, out: &Path, fleet: &Path) -> Output {
    run_generator(Path::new(GENERATOR), config, out, fleet)
}

/// `program` as the generator, with `fleet` as the received set.
fn run_generator(program: &Path, config: &Path, out: &Path, fleet: &Path) -> Output {
    let received = received_dir(fleet);
    let empty = tempfile::tempdir().expect("tempdir");
    Command::new(program)
        .env("KAPELL_CONFIG_DIR", config)
        .env("KAPELL_UNIT_PATH", empty.path())
        .env("KAPELL_RECEIVED_DIR", received.path())
        .arg("--no-kmsg")
        .arg(out)
        .arg(out.with_extension("early"))
        .arg(out.with_extension("late"))
        .output()
        .expect("run generator")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write stack");
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let meta = std::fs::symlink_metadata(&entry).expect("meta");
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&entry).expect("link").to_string_lossy().into_owned().into_bytes()
        } else {
            std::fs::read(&entry).expect("read")
        };
        out.push((entry.strip_prefix(dir).expect("prefix").display().to_string(), content));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const GOOD: &str = "[services.web]\nexec = [\"/bin/sleep\", \"infinity\"]\nrequires = [\"db\"]\n\n[services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\n";
const BAD: &str = "[services.web]\nexec = [\"sleep\"]\n";

/// `kapell` started under the generator's name (a link made by hand) is the generator: it writes
/// byte for byte what the generator's own executable writes, and fails the same way.
#[test]
fn kapell_under_the_generators_name_writes_what_the_generator_writes() {
    let config = tempfile::tempdir().expect("tempdir");
    write(
        config.path(),
        "shop.toml",
        "[services.api]\nexec = [\"/bin/true\"]\n[services.web]\nimage = \"nginx:1\"\nrequires = [\"api\"]\n",
    );
    write(config.path(), "broken.toml", "[services.x]\nexec = [\"/bin/true\"]\nrestrat = \"always\"\n");
    let work = tempfile::tempdir().expect("tempdir");
    let link = work.path().join("kapell-generator");
    std::os::unix::fs::symlink(KAPELL, &link).expect("symlink");
    let fleet = tempfile::tempdir().expect("tempdir");
    let (own, linked) = (work.path().join("own"), work.path().join("linked"));
    let by_own = run_generator(Path::new(GENERATOR), config.path(), &own, fleet.path());
    let by_link = run_generator(&link, config.path(), &linked, fleet.path());
    assert_eq!(by_own.status.code(), Some(3), "{by_own:?}");
    assert_eq!(by_link.status.code(), by_own.status.code(), "{by_link:?}");
    assert_eq!(by_link.stderr, by_own.stderr);
    assert!(listing(&own).iter().any(|(name, _)| name == "shop-web.service"), "{:?}", listing(&own));
    assert_eq!(listing(&linked), listing(&own));
}

#[test]
fn generator_skips_broken_stacks_fails_at_the_end_and_is_idempotent() {
    let config = tempfile::tempdir().expect("tempdir");
    write(config.path(), "good.toml", GOOD);
    write(config.path(), "bad.toml", BAD);
    write(config.path(), "fleet.toml", "[hosts.a]\naddress = \"a\"\n");
    let out = tempfile::tempdir().expect("tempdir");
    let normal = out.path().join("normal");
    std::fs::create_dir(&normal).expect("normal dir");
    std::fs::write(normal.join("other-generator.service"), "[Service]\nExecStart=/bin/true\n").expect("foreign");

    let first = generator(config.path(), &normal);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "a broken stack must make the generator fail");
    assert!(stderr.contains("bad.toml:2:9: `exec[0]` must be an absolute path"), "{stderr}");
    assert!(stderr.contains("stack bad skipped"), "{stderr}");
    let tree = listing(&normal);
    let names: Vec<&str> = tree.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            ".kapell-fleet-units",
            "good-db.service",
            "good-web.service",
            "good.target",
            "multi-user.target.wants/good.target",
            "other-generator.service"
        ]
    );
    // No received set: the generator's list of the units it wrote from one is empty.
    assert_eq!(tree[0].1, b"");
    assert!(
        !out.path().join("normal.early").exists() && !out.path().join("normal.late").exists(),
        "only normal-dir is written"
    );

    // Run again: the same tree, byte for byte, and no temporary files left behind.
    let second = generator(config.path(), &normal);
    assert_eq!(second.status.code(), first.status.code());
    assert_eq!(listing(&normal), tree);

    // A service removed from a stack disappears; files kapell does not own stay.
    write(config.path(), "good.toml", "[services.db]\nexec = [\"/bin/sleep\", \"infinity\"]\n");
    generator(config.path(), &normal);
    let names: Vec<String> = listing(&normal).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            ".kapell-fleet-units",
            "good-db.service",
            "good.target",
            "multi-user.target.wants/good.target",
            "other-generator.service"
        ]
    );
}

#[test]
fn check_json_reports_every_diagnostic_with_its_position() {
    let config = tempfile::tempdir().expect("tempdir");
    write(config.path(), "good.toml", GOOD);
    write(
        config.path(),
        "bad.toml",
        "[services.web]\nimage = \"x\"\nwants = [\"cache\"]\n[services.api]\nimage = \"x\"\nreplicas = 0\n",
    );
    let out = kapell(config.path(), &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["ok"], false);
    assert_eq!(json["failed"], serde_json::json!(["bad"]));
    assert_eq!(json["stacks"][0]["name"], "good");
    let diags = json["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diags.len(), 2, "{diags:?}");
    assert_eq!((diags[0]["line"].as_u64(), diags[0]["column"].as_u64()), (Some(3), Some(10)));
    assert_eq!(diags[0]["severity"], "warning");
    assert_eq!((diags[1]["line"].as_u64(), diags[1]["severity"].as_str()), (Some(6), Some("error")));

    std::fs::remove_file(config.path().join("bad.toml")).expect("rm");
    let ok = kapell(config.path(), &["check", "--json"]);
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn graph_draws_dependencies_as_dot_and_svg() {
    let config = tempfile::tempdir().expect("tempdir");
    write(config.path(), "good.toml", GOOD);
    let dot = kapell(config.path(), &["graph"]);
    assert!(dot.status.success());
    let text = String::from_utf8_lossy(&dot.stdout);
    assert!(text.contains("\"good.web\" -> \"good.db\" [style=solid];"), "{text}");
    let svg = kapell(config.path(), &["graph", "good", "--format", "svg"]);
    assert!(svg.status.success(), "{}", String::from_utf8_lossy(&svg.stderr));
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"), "not SVG");
    let missing = kapell(config.path(), &["graph", "nope"]);
    assert_eq!(missing.status.code(), Some(2), "an unknown stack is a bad request, as for status and logs");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no stack nope"));
    // A name typed on the command line reaches the terminal as text, escapes and all.
    for args in [&["graph", "a\x1b[2Jb"][..], &["logs", "a\x1b[2Jb.web"], &["status", "a\x1b[2Jb"]] {
        let out = kapell(config.path(), args);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!said.contains('\x1b') && said.contains("there is no stack a"), "{args:?}: {said:?}");
    }
}

#[test]
fn huge_and_odd_files_are_refused_with_a_clear_error() {
    let config = tempfile::tempdir().expect("tempdir");
    // Over the size limit: refused before parsing.
    let huge = format!("description = \"{}\"\n", "x".repeat(9 * 1024 * 1024));
    write(config.path(), "huge.toml", &huge);
    // A large but legal file: 2,000 services parse and render.
    let mut big = String::new();
    for i in 0..2000 {
        big.push_str(&format!("[services.s{i}]\nexec = [\"/bin/true\"]\n"));
    }
    write(config.path(), "big.toml", &big);
    // Deep nesting must not overflow the stack.
    write(config.path(), "deep.toml", &format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    // A value no unit line can hold (systemd refuses a unit with a line over 1 MiB).
    let long_value = format!("[services.web]\nexec = [\"/bin/echo\", \"{}\"]\n", "y".repeat(1_100_000));
    write(config.path(), "long.toml", &long_value);
    // Short enough as text, too long once escaped: each U+0001 is `\u0001` in the unit.
    let controls =
        format!("[services.web]\nexec = [\"/bin/echo\"]\nenv = {{ A = \"{}\" }}\n", "\\u0001".repeat(200_000));
    write(config.path(), "controls.toml", &controls);
    let out = kapell(config.path(), &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("huge.toml:1:1: the file is 9437") && stderr.contains("stack files are limited to"),
        "{stderr}"
    );
    assert!(stderr.contains("deep.toml:1:85: cannot recurse further"), "{stderr}");
    assert!(stderr.contains("long.toml:2:22: `exec` is longer than 256 KiB"), "{stderr}");
    assert!(stderr.contains("controls.toml:3:13: `env.A` is too long once escaped for a unit file"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: big (2000 services)"), "{stdout}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["check", "generate", "graph", "apply", "status", "logs"] {
        let out = Command::new(KAPELL).args([sub, "--help"]).output().expect("run");
        assert!(out.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: kapell"), "{sub}");
    }
    let bad = Command::new(KAPELL).arg("frobnicate").output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

const FLEET_UNIT: &str = "[Unit]\nX-Kapell-Stack=shop\n[Service]\nExecStart=/bin/true\n";

/// What `kapell receive` leaves on a peer: units and their wants links, one of them
/// (`good-web.service`) also produced by the local stack `good`.
fn received_set() -> tempfile::TempDir {
    let fleet = tempfile::tempdir().expect("tempdir");
    std::fs::write(fleet.path().join("shop-web.service"), FLEET_UNIT).expect("fleet unit");
    std::fs::write(fleet.path().join("good-web.service"), FLEET_UNIT).expect("conflicting fleet unit");
    std::fs::create_dir(fleet.path().join("multi-user.target.wants")).expect("wants");
    std::os::unix::fs::symlink("../shop.target", fleet.path().join("multi-user.target.wants/shop.target"))
        .expect("link");
    fleet
}

#[test]
fn generator_emits_the_unit_set_a_fleet_installed_and_local_stacks_win() {
    let config = tempfile::tempdir().expect("tempdir");
    write(config.path(), "good.toml", GOOD);
    let fleet = received_set();
    let unit = FLEET_UNIT;
    let out = tempfile::tempdir().expect("tempdir");
    let run = generator_with_fleet(config.path(), out.path(), fleet.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("fleet unit good-web.service ignored"));
    let tree = listing(out.path());
    let get = |name: &str| tree.iter().find(|(n, _)| n == name).map(|(_, c)| String::from_utf8_lossy(c).into_owned());
    assert_eq!(get("shop-web.service").as_deref(), Some(unit));
    assert_eq!(get("multi-user.target.wants/shop.target").as_deref(), Some("../shop.target"));
    assert!(get("good-web.service").is_some_and(|t| t.contains("X-Kapell-Stack=good")), "the local stack wins");
}

#[test]
fn generate_writes_exactly_what_the_generator_writes_including_the_received_set() {
    let config = tempfile::tempdir().expect("tempdir");
    write(config.path(), "good.toml", GOOD);
    let fleet = received_set();
    let by_generator = tempfile::tempdir().expect("tempdir");
    let run = generator_with_fleet(config.path(), by_generator.path(), fleet.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let by_generate = tempfile::tempdir().expect("tempdir");
    let received = received_dir(fleet.path());
    let out = by_generate.path().to_str().expect("utf-8");
    let run = kapell_with_received(config.path(), &["generate", "--out", out], received.path());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("fleet unit good-web.service ignored"));
    let mut want = listing(by_generator.path());
    assert!(want.iter().any(|(n, _)| n == "shop-web.service"), "the generator emits the received set: {want:?}");
    // Its list of the units it wrote from the received set is for `kapell apply`, not a unit:
    // the units from the fleet are the received set less `good-web.service`, which is local.
    let list = want.iter().position(|(n, _)| n == ".kapell-fleet-units").expect("the generator's list");
    assert_eq!(String::from_utf8_lossy(&want.remove(list).1), "shop-web.service\n");
    assert_eq!(listing(by_generate.path()), want);
}

/// `kapell probe` runs a native service's check from this host; a container's check runs in its
/// container, by its supervisor. Asked to probe a container service, it refuses, and its `cmd`
/// (a program that would be this host's, run as the caller) never runs here.
#[test]
fn probe_refuses_a_container_service_and_runs_nothing() {
    let config = tempfile::tempdir().expect("tempdir");
    let units = tempfile::tempdir().expect("tempdir");
    let ran = config.path().join("ran");
    let stack = format!(
        "[services.db]\nimage = \"postgres:16\"\nhealth = {{ cmd = [\"/usr/bin/touch\", {:?}] }}\n",
        ran.display().to_string()
    );
    std::fs::write(config.path().join("data.toml"), stack).expect("stack");
    let out = kapell(config.path(), &["generate", "--out", &units.path().display().to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let probe = Command::new(KAPELL)
        .env("KAPELL_UNIT_PATH", units.path())
        .args(["probe", "data.db"])
        .output()
        .expect("run kapell probe");
    let stderr = String::from_utf8_lossy(&probe.stderr);
    assert!(!probe.status.success(), "{probe:?}");
    assert!(stderr.contains("data.db is a container service: its supervisor probes it in its container"), "{stderr}");
    assert!(!ran.exists(), "the container's check ran on the host");
}
