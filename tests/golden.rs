//! Golden tests: each directory under tests/golden/ holds `input/` (a config directory of stacks),
//! optionally `units/` (unit files that already exist in systemd's search path), and the expected
//! result of `kapell generate`: `expected/` (the unit set) and `expected.stderr` (every
//! diagnostic, then `[exit N]`). A case with an `args` file (one argument a line, e.g. `fleet`
//! and `plan` for the errors of `input/fleet.toml`) runs that command instead of `generate`,
//! and only its standard error is compared. The comparison is exact. Re-bless after an intended change with
//!
//!     KAPELL_BLESS=1 cargo test --test golden
//!
//! (which rewrites the expectations and then fails, so that it never counts as a passing run),
//! review the diff, and run again without it. Every expected unit set must also pass `systemd-analyze verify`.

mod bless;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const CASE_PLACEHOLDER: &str = "@CASE@";

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "expected at least 40 golden cases, found {}", cases.len());
    cases
}

/// A unit set as a map: relative path → file content, or `-> target` for a symlink.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(base).expect("prefix").to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&path).expect("link").display()));
            } else if meta.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(rel, std::fs::read_to_string(&path).expect("utf-8 unit file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn write_tree(dir: &Path, tree: &BTreeMap<String, String>) {
    let _ = std::fs::remove_dir_all(dir);
    for (rel, content) in tree {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        match content.strip_prefix("-> ") {
            Some(target) => std::os::unix::fs::symlink(target, &path).expect("symlink"),
            None => std::fs::write(&path, content).expect("write"),
        }
    }
}

/// Runs `kapell generate` for a case; returns (tree, stderr with the exit status).
fn run_case(case: &Path) -> (BTreeMap<String, String>, String) {
    let out = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let units = case.join("units");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kapell"));
    command
        .current_dir(case)
        .env_remove("KAPELL_CONFIG_DIR")
        .env("KAPELL_RECEIVED_DIR", empty.path())
        .env("KAPELL_UNIT_PATH", if units.is_dir() { units.as_path() } else { empty.path() })
        .args(["--config-dir", "input"]);
    match std::fs::read_to_string(case.join("args")) {
        Ok(args) => command.args(args.lines().filter(|l| !l.is_empty())),
        Err(_) => command.arg("generate").arg("--out").arg(out.path()),
    };
    let output = command.output().expect("run kapell");
    // Absolute paths of the checkout would make the files machine-specific.
    let case_abs = case.canonicalize().expect("case path").display().to_string();
    let tree = read_tree(out.path()).into_iter().map(|(k, v)| (k, v.replace(&case_abs, CASE_PLACEHOLDER))).collect();
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&case_abs, CASE_PLACEHOLDER);
    let stderr = format!("{stderr}[exit {}]\n", output.status.code().unwrap_or(-1));
    (tree, stderr)
}

#[test]
fn golden_cases() {
    let mut golden = bless::Golden::new("cargo test --test golden");
    for case in cases() {
        let name = case.file_name().expect("name").to_string_lossy().into_owned();
        let (tree, stderr) = run_case(&case);
        let expected_dir = case.join("expected");
        golden.check(&format!("{name}/expected.stderr"), &case.join("expected.stderr"), &stderr);
        let want_tree = read_tree(&expected_dir);
        if want_tree == tree {
            continue;
        }
        if golden.blessing() {
            write_tree(&expected_dir, &tree);
            golden.fail(format!("{name}/expected rewritten"));
            continue;
        }
        for path in want_tree.keys().chain(tree.keys()) {
            let (want, got) = (want_tree.get(path), tree.get(path));
            if want != got {
                let show = |s: Option<&String>| s.map_or_else(|| "(missing)".to_string(), String::clone);
                golden.fail(format!("{name}/{path}: differs\n--- expected\n{}\n--- actual\n{}", show(want), show(got)));
                break;
            }
        }
    }
    golden.finish();
}

#[test]
fn expected_unit_sets_pass_systemd_analyze_verify() {
    let mut checked = 0;
    for case in cases() {
        let tree = read_tree(&case.join("expected"));
        if tree.is_empty() {
            continue;
        }
        // Put the real (absolute) case path back: systemd wants SourcePath= absolute.
        let case_abs = case.canonicalize().expect("case path").display().to_string();
        let units = tempfile::tempdir().expect("tempdir");
        write_tree(units.path(), &tree.into_iter().map(|(k, v)| (k, v.replace(CASE_PLACEHOLDER, &case_abs))).collect());
        verify::verify_unit_dir(units.path()).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases produced units");
}

#[test]
fn examples_are_valid_and_pass_systemd_analyze_verify() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = tempfile::tempdir().expect("tempdir");
    let empty = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_kapell"))
        .env("KAPELL_RECEIVED_DIR", empty.path())
        .env("KAPELL_UNIT_PATH", empty.path())
        .arg("--config-dir")
        .arg(&examples)
        .args(["generate", "--out"])
        .arg(out.path())
        .output()
        .expect("run kapell");
    assert!(output.status.success() && output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    let stacks = kapell::config::stack_files(&examples).expect("examples");
    assert!(stacks.len() >= 3, "at least three example stacks");
    verify::verify_unit_dir(out.path()).expect("examples verify");
}
