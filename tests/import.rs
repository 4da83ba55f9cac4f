//! `kapell import compose` golden tests. Each directory under tests/import/ is a Compose project:
//! `compose.yaml` (or another name Compose looks for), optionally `.env`, and optionally
//!   - `args`: more arguments, one per line (e.g. `--strict`);
//!   - `environment`: `KEY=VALUE` lines, the environment the import runs in (otherwise empty but
//!     for PATH, HOME=/home/op and an empty KAPELL_UNIT_PATH).
//!
//! The import runs in the case's directory as `kapell import compose [args]`; its standard output
//! must equal `expected.toml` and its standard error, then `[exit N]`, `expected.stderr`. The
//! case's absolute path is written `@CASE@`. Re-bless after an intended change with
//!
//!     KAPELL_BLESS=1 cargo test --test import
//!
//! (which rewrites the expectations and then fails, so that it never counts as a passing run),
//! review the diff, and run again without it. Every expected stack must pass `kapell check` and render units that pass
//! `systemd-analyze verify`.

mod bless;
mod verify;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
const CASE_PLACEHOLDER: &str = "@CASE@";

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/import")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "expected at least 20 import cases, found {}", cases.len());
    cases
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

fn run_case(case: &Path) -> (String, String) {
    // No unit of the machine may shadow a case's stack: the results must not depend on it.
    let no_units = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(KAPELL);
    cmd.current_dir(case)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/op")
        .env("KAPELL_UNIT_PATH", no_units.path());
    for line in read_lines(&case.join("environment")) {
        let (k, v) = line.split_once('=').expect("KEY=VALUE in environment");
        cmd.env(k, v);
    }
    let output = cmd.args(["import", "compose"]).args(read_lines(&case.join("args"))).output().expect("run kapell");
    let case_abs = case.canonicalize().expect("case path").display().to_string();
    let stdout = String::from_utf8_lossy(&output.stdout).replace(&case_abs, CASE_PLACEHOLDER);
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&case_abs, CASE_PLACEHOLDER);
    (stdout, format!("{stderr}[exit {}]\n", output.status.code().unwrap_or(-1)))
}

#[test]
fn import_golden_cases() {
    let mut golden = bless::Golden::new("cargo test --test import");
    for case in cases() {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        let (stdout, stderr) = run_case(&case);
        golden.check(&format!("{name} (stdout)"), &case.join("expected.toml"), &stdout);
        golden.check(&format!("{name} (stderr)"), &case.join("expected.stderr"), &stderr);
    }
    golden.finish();
}

/// The stack name an expected stack file declares in its first line.
fn stack_of(toml: &str) -> String {
    let first = toml.lines().next().expect("a first line");
    first.split('`').nth(1).expect("# Stack `name`, …").to_string()
}

fn kapell(config: &Path, args: &[&str]) -> Output {
    let empty = tempfile::tempdir().expect("tempdir");
    Command::new(KAPELL)
        .env("KAPELL_UNIT_PATH", empty.path())
        .env("KAPELL_RECEIVED_DIR", empty.path())
        .env_remove("KAPELL_CONFIG_DIR")
        .arg("--config-dir")
        .arg(config)
        .args(args)
        .output()
        .expect("run kapell")
}

#[test]
fn every_imported_stack_passes_check_and_systemd_analyze_verify() {
    let mut checked = 0;
    for case in cases() {
        let toml = std::fs::read_to_string(case.join("expected.toml")).unwrap_or_default();
        if toml.is_empty() {
            continue;
        }
        let case_abs = case.canonicalize().expect("case path").display().to_string();
        let config = tempfile::tempdir().expect("tempdir");
        let stack = stack_of(&toml);
        std::fs::write(config.path().join(format!("{stack}.toml")), toml.replace(CASE_PLACEHOLDER, &case_abs))
            .expect("write stack");
        let check = kapell(config.path(), &["check"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success() && stderr.is_empty(), "{}: kapell check:\n{stderr}", case.display());
        let units = tempfile::tempdir().expect("tempdir");
        let out = units.path().join("units");
        let generate = kapell(config.path(), &["generate", "--out", out.to_str().expect("utf-8")]);
        assert!(generate.status.success(), "{}: {}", case.display(), String::from_utf8_lossy(&generate.stderr));
        verify::verify_unit_dir(&out).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} cases produced a stack");
}

/// The short and the long form of every key kapell carries mean the same: both import to the same
/// stack (but for the stack's name and the paths of the case).
#[test]
fn short_and_long_forms_import_to_the_same_stack() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let (short, short_err) = run_case(&dir.join("forms-short"));
    let (long, long_err) = run_case(&dir.join("forms-long"));
    assert!(short_err.ends_with("[exit 0]\n") && long_err.ends_with("[exit 0]\n"), "{short_err}{long_err}");
    let (short, long) = (short.replace("forms-short", "forms"), long.replace("forms-long", "forms"));
    assert!(short.contains("[services.app.health]") && short.contains("replicas = 2"), "{short}");
    assert_eq!(short, long);
}

fn import_in(dir: &Path, args: &[&str]) -> Output {
    let no_units = tempfile::tempdir().expect("tempdir");
    Command::new(KAPELL)
        .current_dir(dir)
        .env_clear()
        .env("KAPELL_UNIT_PATH", no_units.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/home/op")
        .args(["import", "compose"])
        .args(args)
        .output()
        .expect("run kapell")
}

const TWO_SERVICES: &str =
    "services:\n  web:\n    image: example/web:1\n    depends_on: [db]\n  db:\n    image: postgres:16\n";

#[test]
fn out_writes_the_stack_file_and_refuses_to_overwrite_it() {
    let project = tempfile::tempdir().expect("tempdir");
    let dir = project.path().join("Shop_App");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("docker-compose.yml"), TWO_SERVICES).expect("write");
    let etc = tempfile::tempdir().expect("tempdir");
    let etc_arg = etc.path().to_str().expect("utf-8");

    // A directory: <stack>.toml in it, the stack named after the project directory.
    let first = import_in(&dir, &["--out", etc_arg]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert!(first.stdout.is_empty());
    let written = std::fs::read_to_string(etc.path().join("shop-app.toml")).expect("shop-app.toml written");
    assert!(written.contains("[services.web]\nimage = \"example/web:1\"\nrequires = [\"db\"]"), "{written}");
    assert_eq!(std::fs::read_dir(etc.path()).expect("ls").count(), 1, "no temporary file is left behind");

    // The same again is refused (2) and changes nothing; --force replaces it.
    std::fs::write(etc.path().join("shop-app.toml"), "edited by hand\n").expect("write");
    // Kept private for the secrets in it: --force keeps it so.
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(etc.path().join("shop-app.toml"), private).expect("chmod");
    let again = import_in(&dir, &["--out", etc_arg]);
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; remove it, choose another --out, or add --force"));
    assert_eq!(std::fs::read_to_string(etc.path().join("shop-app.toml")).expect("read"), "edited by hand\n");
    let forced = import_in(&dir, &["--out", etc_arg, "--force"]);
    assert_eq!(forced.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(etc.path().join("shop-app.toml")).expect("read"), written);
    let mode = std::fs::metadata(etc.path().join("shop-app.toml")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "--force made the stack {mode:o}");

    // A file: its stem names the stack; the written stack passes kapell check.
    let file = etc.path().join("shop.toml");
    let named = import_in(&dir, &["--out", file.to_str().expect("utf-8")]);
    assert_eq!(named.status.code(), Some(0), "{}", String::from_utf8_lossy(&named.stderr));
    assert!(std::fs::read_to_string(&file).expect("read").starts_with("# Stack `shop`"));
    let check = kapell(etc.path(), &["check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(String::from_utf8_lossy(&check.stdout), "ok: shop (2 services)\nok: shop-app (2 services)\n");
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    let in_out = |name: &str| out.path().join(name).to_str().expect("utf-8").to_string();
    // No Compose file in the directory.
    let none = import_in(dir.path(), &[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no Compose file here"));
    std::fs::write(dir.path().join("compose.yaml"), TWO_SERVICES).expect("write");
    for args in [
        vec!["--stack", "Bad_Name"],
        vec!["--stack", "shop", "--out", &in_out("other.toml")],
        vec!["--out", &in_out("shop.yaml")],
        vec!["--out", &in_out("Not_A_Stack.toml")],
    ] {
        let output = import_in(dir.path(), &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("error: "), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(out.path()).expect("ls").count(), 0);
    // --force needs --out (clap's own usage error).
    assert_eq!(import_in(dir.path(), &["--force"]).status.code(), Some(2));
}

#[test]
fn strict_writes_nothing_when_something_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: example/web:1\n    privileged: true\n",
    )
    .expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let output = import_in(dir.path(), &["--strict", "--out", out.path().to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: services.web.privileged: not carried over"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.path()).expect("ls").count(), 0);
    // Without --strict the same import writes the stack and still exits 4.
    let lenient = import_in(dir.path(), &["--out", out.path().to_str().expect("utf-8")]);
    assert_eq!(lenient.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&lenient.stderr).starts_with("warning: services.web.privileged"));
    assert_eq!(std::fs::read_dir(out.path()).expect("ls").count(), 1);
}

#[test]
fn env_file_option_replaces_the_project_env_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("compose.yaml"), "services:\n  web:\n    image: example/web:${TAG}\n")
        .expect("write");
    std::fs::write(dir.path().join(".env"), "TAG=from-dotenv\n").expect("write");
    std::fs::write(dir.path().join("prod.env"), "TAG=from-prod\n").expect("write");
    let default = import_in(dir.path(), &[]);
    assert!(String::from_utf8_lossy(&default.stdout).contains("image = \"example/web:from-dotenv\""));
    let chosen = import_in(dir.path(), &["--env-file", "prod.env"]);
    assert!(String::from_utf8_lossy(&chosen.stdout).contains("image = \"example/web:from-prod\""));
}

/// The README's Compose example is a golden case: its Compose file, the stack it becomes and the
/// warnings of the Traefik case are quoted exactly.
#[test]
fn readme_example_is_the_golden_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let case = root.join("tests/import/wordpress");
    let compose = std::fs::read_to_string(case.join("compose.yaml")).expect("compose.yaml");
    let stack = std::fs::read_to_string(case.join("expected.toml")).expect("expected.toml");
    assert!(readme.contains(&format!("```yaml\n{compose}```")), "README quotes tests/import/wordpress/compose.yaml");
    let stack = stack.replace(CASE_PLACEHOLDER, "/srv/wordpress");
    assert!(readme.contains(&format!("```toml\n{stack}```")), "README quotes tests/import/wordpress/expected.toml");
    let warnings = std::fs::read_to_string(root.join("tests/import/traefik/expected.stderr")).expect("stderr");
    let warnings = warnings.replace(CASE_PLACEHOLDER, "/srv/traefik").replace("[exit 4]\n", "exit 4\n");
    assert!(readme.contains(&warnings), "README quotes tests/import/traefik/expected.stderr");
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = Command::new(KAPELL).args(["import", "compose", "--help"]).output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: kapell import compose [OPTIONS] [FILE]"), "{help}");
    for status in ["0 everything was carried over", "4 something was not", "1 the Compose file is invalid"] {
        assert!(help.replace('\n', " ").replace("  ", " ").contains(status), "{status}: {help}");
    }
    let out = Command::new(KAPELL).args(["import", "--help"]).output().expect("run");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("compose"));
    assert_eq!(Command::new(KAPELL).args(["import"]).output().expect("run").status.code(), Some(2));
}

#[test]
fn a_stack_that_would_shadow_a_unit_of_the_host_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("compose.yaml"), TWO_SERVICES).expect("write");
    let units = tempfile::tempdir().expect("tempdir");
    std::fs::write(units.path().join("shop-db.service"), "[Service]\nExecStart=/bin/true\n").expect("unit");
    let run = |stack: &str| {
        Command::new(KAPELL)
            .current_dir(dir.path())
            .env("KAPELL_UNIT_PATH", units.path())
            .args(["import", "compose", "--stack", stack])
            .output()
            .expect("run kapell")
    };
    let refused = run("shop");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("service `db` would produce `shop-db.service`, which already exists"), "{stderr}");
    assert!(refused.stdout.is_empty());
    assert_eq!(run("store").status.code(), Some(0));
}
