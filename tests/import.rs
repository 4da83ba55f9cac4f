//! `kapell import compose` golden tests. Each directory under tests/import/ is a Compose project:
//! `compose.yaml` (or another name Compose looks for), optionally `.env`, and optionally
//!   - `args`: more arguments, one per line (e.g. `--strict`);
//!   - `environment`: `KEY=VALUE` lines, the environment the import runs in (otherwise empty but
//!     for PATH and HOME=/home/op).
//!
//! The import runs in the case's directory as `kapell import compose [args]`; its standard output
//! must equal `expected.toml` and its standard error, then `[exit N]`, `expected.stderr`. The
//! case's absolute path is written `@CASE@`. Re-bless after an intended change with
//!
//!     KAPELL_BLESS=1 cargo test --test import
//!
//! and review the diff. Every expected stack must pass `kapell check` and render units that pass
//! `systemd-analyze verify`.

mod verify;

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
    let mut cmd = Command::new(KAPELL);
    cmd.current_dir(case).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", "/home/op");
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
    let bless = std::env::var_os("KAPELL_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        let (stdout, stderr) = run_case(&case);
        let (want_toml, want_err) = (case.join("expected.toml"), case.join("expected.stderr"));
        if bless {
            std::fs::write(&want_toml, &stdout).expect("write expected.toml");
            std::fs::write(&want_err, &stderr).expect("write expected.stderr");
            continue;
        }
        let want = std::fs::read_to_string(&want_toml).unwrap_or_default();
        if want != stdout {
            failures.push(format!("{name}: stdout differs\n--- expected\n{want}--- actual\n{stdout}"));
        }
        let want = std::fs::read_to_string(&want_err).unwrap_or_default();
        if want != stderr {
            failures.push(format!("{name}: stderr differs\n--- expected\n{want}--- actual\n{stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} import failure(s) (KAPELL_BLESS=1 re-blesses):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
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
