//! The generator where the system will not start a thread for it (a cgroup's pids limit, or
//! `RLIMIT_NPROC`, reached at boot): it parses, renders and writes on its one thread, and its
//! output is the same as with threads. A generator that crashed there would leave the host
//! without its units.
//!
//! The limit is `RLIMIT_NPROC = 1` for a user id that runs nothing else, so the generator's own
//! process is the one task allowed: every `clone` of a thread fails with `EAGAIN`. Setting
//! another user id needs root.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

#[path = "support/tree.rs"]
mod tree;

const GENERATOR: &str = env!("CARGO_BIN_EXE_kapell-generator");

/// A user and group id no account has, so no other process counts against its limit.
const NOBODY_ELSE: u32 = 4_242_421;

/// One large stack (parsed in pieces, on threads when it can) and many small ones (parsed and
/// written on threads when it can).
fn write_config(dir: &Path) {
    let mut big = String::from("description = \"one large stack\"\n");
    for j in 0..400 {
        big.push_str(&format!("[services.svc{j}]\nexec = [\"/bin/sleep\", \"{j}\"]\nenv = {{ N = \"{j}\" }}\n"));
        if j > 0 {
            big.push_str(&format!("wants = [\"svc{}\"]\n", j - 1));
        }
    }
    std::fs::write(dir.join("big.toml"), big).expect("write stack");
    for i in 0..40 {
        let text: String = (0..5).map(|j| format!("[services.svc{j}]\nexec = [\"/bin/true\", \"{i}\"]\n")).collect();
        std::fs::write(dir.join(format!("s{i}.toml")), text).expect("write stack");
    }
}

/// Runs `generator` into a new `out`; with `limited`, as [`NOBODY_ELSE`] with no thread to
/// spare. Returns its exit status and stderr.
fn generate(generator: &Path, config: &Path, out: &Path, limited: bool) -> (std::process::ExitStatus, String) {
    std::fs::create_dir(out).expect("out dir");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o777)).expect("chmod out");
    let none = out.with_extension("none");
    // The crate denies `unsafe_code` (no `pre_exec`): util-linux's `setpriv` and `prlimit` set
    // the user and the limit, then exec the generator.
    let mut cmd = if limited {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", &NOBODY_ELSE.to_string(), "--regid", &NOBODY_ELSE.to_string(), "--clear-groups"])
            .args(["--", "prlimit", "--nproc=1", "--"])
            .arg(generator);
        cmd
    } else {
        Command::new(generator)
    };
    cmd.env("KAPELL_CONFIG_DIR", config)
        .env("KAPELL_UNIT_PATH", &none)
        .env("KAPELL_RECEIVED_DIR", &none)
        .arg("--no-kmsg")
        .arg(out)
        .arg(out.with_extension("early"))
        .arg(out.with_extension("late"));
    let output = cmd.output().expect("run the generator");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_generator_that_cannot_start_threads_writes_everything_on_its_own() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it runs the generator as another user id, with RLIMIT_NPROC = 1; run it as root, \
         or run the tests that need no root: `cargo test --lib --test golden --test cli --test generator_kill`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    write_config(&config);
    // A copy the other user id can reach, wherever the build directory is (`/root/…` is not).
    let generator = dir.path().join("kapell-generator");
    std::fs::copy(GENERATOR, &generator).expect("copy the generator");
    std::fs::set_permissions(&generator, std::fs::Permissions::from_mode(0o755)).expect("chmod generator");

    let (status, stderr) = generate(&generator, &config, &dir.path().join("threads"), false);
    assert!(status.success(), "with threads: {status}: {stderr}");
    let expected = tree::read(&dir.path().join("threads"));
    // Every unit and link, and the generator's (empty) list of the units it wrote from a received set.
    assert_eq!(expected.len(), 1 + 400 + 40 * (1 + 5) + 41 + 1, "every unit and link: {:?}", expected.keys());

    let (status, stderr) = generate(&generator, &config, &dir.path().join("limited"), true);
    assert!(status.success(), "no thread to spare: {status}: {stderr}");
    let got = tree::read(&dir.path().join("limited"));
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "the same files");
    for (path, bytes) in &expected {
        // The units name their stack file, which is the same; nothing else differs either.
        assert!(
            got[path] == *bytes,
            "{path} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(&got[path]),
            String::from_utf8_lossy(bytes)
        );
    }
}
