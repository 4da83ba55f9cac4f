//! Mounts and directory removal that never reach through a mount point.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::cmd::{poll, run};

/// Mount points at or below `dir` in our mount namespace, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Unmounts everything at or below `dir`. A mount still busy after a few seconds is detached
/// lazily so the test run can finish; the kernel frees it when its last user goes.
pub fn unmount_below(dir: &Path) -> Result<()> {
    for mount in mounts_below(dir) {
        let unmounted = poll(Duration::from_secs(5), || {
            run(Command::new("umount").arg(&mount)).is_ok_and(|o| o.status.success())
                || !mounts_below(dir).contains(&mount)
        });
        if !unmounted {
            eprintln!("kapell-test: {} busy, detaching lazily", mount.display());
            run(Command::new("umount").arg("-l").arg(&mount))?;
        }
    }
    let left = mounts_below(dir);
    anyhow::ensure!(left.is_empty(), "still mounted: {left:?}");
    Ok(())
}

/// Unmounts everything below `dir`, then deletes it. Refuses to delete while anything is
/// mounted there, so a failed unmount can never delete files inside another tree.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_below(dir)?;
    std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))
}
