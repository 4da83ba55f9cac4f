//! The generator killed at random moments : in systemd's output directory a
//! unit of at most one page is written in place (`O_CREAT|O_EXCL`, one `write(2)`), a longer one
//! through a temporary file and `rename(2)`. Whenever the process dies, every unit file there is
//! absent, empty (which systemd treats as masked) or whole, never a part; a long unit is never
//! even empty; every link is whole.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/tree.rs"]
mod tree;

/// The generator as the packages install it.
const GENERATOR: &str = env!("CARGO_BIN_EXE_kapell-generator");
const KILLS: usize = 60;
/// Units up to one page are written in place (docs/decisions.md).
const PAGE: usize = 4096;

/// Stacks of small services, plus one service whose unit is several pages long.
fn write_config(dir: &Path) {
    for i in 0..40 {
        let mut text = String::new();
        for j in 0..10 {
            text.push_str(&format!("[services.svc{j}]\nexec = [\"/bin/sleep\", \"{j}\"]\n"));
            if j > 0 {
                text.push_str(&format!("requires = [\"svc{}\"]\n", j - 1));
            }
        }
        std::fs::write(dir.join(format!("s{i}.toml")), text).expect("write stack");
    }
    let env: Vec<String> = (0..60).map(|k| format!("VAR_{k} = \"{}\"", "x".repeat(100))).collect();
    let big = format!("[services.big]\nexec = [\"/bin/true\"]\nenv = {{ {} }}\n", env.join(", "));
    std::fs::write(dir.join("big.toml"), big).expect("write stack");
}

fn spawn(config: &Path, out: &Path, link: &Path) -> Child {
    std::fs::create_dir(out).expect("out dir");
    let empty = out.with_extension("none");
    Command::new(link)
        .env("KAPELL_CONFIG_DIR", config)
        .env("KAPELL_UNIT_PATH", &empty)
        .env("KAPELL_RECEIVED_DIR", &empty)
        .arg("--no-kmsg")
        .arg(out)
        .arg(out.with_extension("early"))
        .arg(out.with_extension("late"))
        .stderr(Stdio::null())
        .spawn()
        .expect("run generator")
}

/// Every entry under `dir` ([`tree::read`]) but the temporary files of an interrupted rename
/// (hidden names, which systemd does not load).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = tree::read(dir);
    all.retain(|rel, _| !rel.split('/').any(|name| name.starts_with('.')));
    all
}

/// A small xorshift generator: the kill moments differ per run, and the seed is printed so a
/// failure can be replayed with `KAPELL_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn a_killed_generator_leaves_no_partial_unit() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    write_config(&config);
    let link = work.path().join("kapell-generator");
    std::os::unix::fs::symlink(GENERATOR, &link).expect("symlink");

    // The whole set, and how long a whole run takes: the quickest of three, since the first pays
    // for cold caches, and kill times scaled to a slow run would mostly land after the last write.
    let reference = work.path().join("reference");
    let mut full_run = Duration::MAX;
    for run in 0..3 {
        let out = if run == 0 { reference.clone() } else { work.path().join(format!("timing-{run}")) };
        let start = Instant::now();
        let status = spawn(&config, &out, &link).wait().expect("wait");
        full_run = full_run.min(start.elapsed());
        assert!(status.success(), "the reference run failed");
        if run > 0 {
            std::fs::remove_dir_all(&out).expect("cleanup");
        }
    }
    let whole = tree(&reference);
    assert!(whole.len() > 400, "expected the units of 401 services, found {}", whole.len());
    let big = whole.get("big-big.service").expect("the long unit");
    assert!(big.len() > PAGE, "the long unit is {} bytes, not over a page", big.len());

    let seed = std::env::var("KAPELL_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1);
    println!("seed {seed} (KAPELL_KILL_SEED={seed} replays it); a whole run takes {full_run:?}");
    let mut rng = Rng(seed);
    let (mut interrupted, mut masked) = (0, 0);
    for kill in 0..KILLS {
        let out = work.path().join(format!("out-{kill}"));
        let mut child = spawn(&config, &out, &link);
        // Anywhere from before the first write to after the last one.
        let delay = Duration::from_micros(rng.below(full_run.as_micros() as u64 * 3 / 2));
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL; it may have finished already
        let status = child.wait().expect("wait");
        let got = tree(&out);
        if status.signal().is_some() && got.len() < whole.len() {
            interrupted += 1;
        }
        for (path, bytes) in &got {
            let want = whole.get(path).unwrap_or_else(|| panic!("kill {kill} (seed {seed}): unexpected file {path}"));
            if bytes == want {
                continue;
            }
            assert!(
                bytes.is_empty() && !path.contains('/') && want.len() <= PAGE,
                "kill {kill} after {delay:?} (seed {seed}): {path} holds {} of its {} bytes; only a unit of at most \
                 a page may be left empty (masked), and none partial",
                bytes.len(),
                want.len()
            );
            masked += 1;
        }
        std::fs::remove_dir_all(&out).expect("cleanup");
    }
    println!("{interrupted} of {KILLS} runs were killed part-way; {masked} unit(s) were left empty (masked)");
    assert!(
        interrupted >= KILLS / 4,
        "only {interrupted} of {KILLS} kills landed while the generator was writing (seed {seed}); the test did not \
         test much"
    );
}
