//! Expected files of golden tests, checked or re-blessed the same way everywhere: with
//! `KAPELL_BLESS` set, a file that differs is rewritten and the test then fails (a bless run
//! rewrote the expectations instead of checking them, so it must never count as a green run);
//! without it, a file that differs or is missing is a failure, even when the output is empty.

#![allow(dead_code, reason = "each test binary uses only part of it")]

use std::path::{Path, PathBuf};

pub struct Golden {
    /// How to re-bless, for the messages (`cargo test --test import`).
    command: &'static str,
    bless: bool,
    rewritten: Vec<PathBuf>,
    failures: Vec<String>,
}

impl Golden {
    pub fn new(command: &'static str) -> Self {
        Golden {
            command,
            bless: std::env::var_os("KAPELL_BLESS").is_some(),
            rewritten: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Compares `actual` with the file at `path`; `label` names the case in a failure.
    pub fn check(&mut self, label: &str, path: &Path, actual: &str) {
        let expected = std::fs::read_to_string(path).ok();
        if expected.as_deref() == Some(actual) {
            return;
        }
        if self.bless {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            }
            std::fs::write(path, actual).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            self.rewritten.push(path.to_path_buf());
            return;
        }
        match expected {
            None => self.failures.push(format!("{label}: {} is missing; the output is\n{actual}", path.display())),
            Some(want) => self.failures.push(format!("{label}: differs\n--- expected\n{want}--- actual\n{actual}")),
        }
    }

    /// Records a failure found some other way (a tree of files that differs, say).
    pub fn fail(&mut self, failure: String) {
        self.failures.push(failure);
    }

    pub fn blessing(&self) -> bool {
        self.bless
    }

    /// Panics when anything differed, or when this was a bless run.
    pub fn finish(self) {
        assert!(
            !self.bless,
            "KAPELL_BLESS is set: {} file(s) rewritten, nothing checked; review `git diff` and run `{}` again without \
             KAPELL_BLESS:\n{}",
            self.rewritten.len(),
            self.command,
            self.rewritten.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n")
        );
        assert!(
            self.failures.is_empty(),
            "{} failure(s) (`KAPELL_BLESS=1 {}` re-blesses; review the diff):\n\n{}",
            self.failures.len(),
            self.command,
            self.failures.join("\n\n")
        );
    }
}
