//! The controller's word on instances no responder can probe (see docs/discovery.md): those whose
//! check is `cmd` (it runs inside the container or as the service's user, so only their own host
//! can run it), with a check on a port other hosts cannot reach, or with no check at all.
//!
//! The controller learns their health from each host's replies (unit active, not failing its
//! check) and sends it with every install (see docs/fleet-protocol.md); the peer keeps it in
//! `health.json` of its received directory, apart from the generations: it is not part of any
//! set, so it changes no set's hash and never causes an install or a rollout. The responder
//! reads it for those instances and keeps the last one it got when the controller is gone (it
//! stays across reboots, as the catalog does).

use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The file's name in the received directory.
pub const FILE: &str = "health.json";

/// One instance: `service` of `stack` on `host`, as the catalog names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceHealth {
    pub stack: String,
    pub service: String,
    pub host: String,
    pub healthy: bool,
}

/// `health.json` in the received directory of this host.
pub fn path() -> PathBuf {
    path_in(&crate::received_sets::received_dir())
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The last word the controller sent; empty when it sent none (or the file cannot be read: the
/// catalog's own `healthy`, else healthy, applies then).
pub fn read(path: &Path) -> Vec<InstanceHealth> {
    std::fs::read(path).ok().and_then(|text| serde_json::from_slice(&text).ok()).unwrap_or_default()
}

/// Writes `instances` (sorted, so equal words are equal files) unless the file already says
/// exactly that: replaced whole, so the responder never reads half a file, and durably, as the
/// responder reads it after a reboot too (a file lost to a crash would make every instance the
/// controller judged count as healthy). Whether the file changed.
pub fn write(path: &Path, instances: &[InstanceHealth]) -> std::io::Result<bool> {
    let text = text(instances).map_err(std::io::Error::other)?;
    if std::fs::read(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    crate::atomic_file::replace(path, &text, crate::atomic_file::Durability::Durable)?;
    Ok(true)
}

/// The file's text for `instances`: sorted, so equal words are equal texts (a peer names the
/// word it holds by the hash of its file's text).
pub fn text(instances: &[InstanceHealth]) -> serde_json::Result<Vec<u8>> {
    let mut sorted = instances.to_vec();
    sorted.sort();
    serde_json::to_vec(&sorted)
}

/// The file as the responder follows it: read again only when its inode (each write renames a
/// new file into place), size or modification time changed, so looking every tick costs one
/// `stat`.
#[derive(Debug, Default)]
pub struct Watch {
    path: PathBuf,
    stamp: Option<(u64, u64, std::time::SystemTime)>,
    /// The word as last read.
    pub word: Vec<InstanceHealth>,
}

impl Watch {
    pub fn new(path: PathBuf) -> Watch {
        let mut watch = Watch { path, ..Watch::default() };
        watch.poll();
        watch
    }

    /// Reads the file again if it changed; whether the word did. A file that went away keeps
    /// the last word: what the controller said last holds until it says something else.
    pub fn poll(&mut self) -> bool {
        let Ok(meta) = std::fs::metadata(&self.path) else { return false };
        let stamp = meta.modified().ok().map(|m| (meta.ino(), meta.len(), m));
        if stamp.is_some() && stamp == self.stamp {
            return false;
        }
        self.stamp = stamp;
        let word = read(&self.path);
        if word == self.word {
            return false;
        }
        self.word = word;
        true
    }

    /// What the controller said of `service` of `stack` on `host`, if anything.
    pub fn get(&self, stack: &str, service: &str, host: &str) -> Option<bool> {
        self.word.iter().find(|i| i.stack == stack && i.service == service && i.host == host).map(|i| i.healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_once_read_back_sorted() {
        let dir = tempfile::tempdir().expect("dir");
        let path = path_in(dir.path());
        assert!(read(&path).is_empty(), "no word yet");
        let one = |host: &str, healthy| InstanceHealth {
            stack: "data".into(),
            service: "db".into(),
            host: host.into(),
            healthy,
        };
        assert!(write(&path, &[one("h3", false), one("h1", true)]).expect("write"));
        assert_eq!(read(&path), [one("h1", true), one("h3", false)]);
        assert!(!write(&path, &[one("h1", true), one("h3", false)]).expect("same"), "unchanged: not rewritten");
        assert!(write(&path, &[]).expect("empty"));
        assert!(read(&path).is_empty());
        std::fs::write(&path, "{not json").expect("garbage");
        assert!(read(&path).is_empty(), "an unreadable file is no word");
    }

    #[test]
    fn the_watch_follows_the_file_and_keeps_the_last_word() {
        let dir = tempfile::tempdir().expect("dir");
        let path = path_in(dir.path());
        let mut watch = Watch::new(path.clone());
        assert!(!watch.poll() && watch.word.is_empty(), "no file: no word");
        let db = |healthy| InstanceHealth { stack: "data".into(), service: "db".into(), host: "h3".into(), healthy };
        write(&path, &[db(false)]).expect("write");
        assert!(watch.poll());
        assert_eq!(watch.get("data", "db", "h3"), Some(false));
        assert_eq!(watch.get("data", "db", "h1"), None);
        assert!(!watch.poll(), "unchanged");
        write(&path, &[db(true)]).expect("write");
        assert!(watch.poll());
        assert_eq!(watch.get("data", "db", "h3"), Some(true));
        std::fs::remove_file(&path).expect("rm");
        assert!(!watch.poll());
        assert_eq!(watch.get("data", "db", "h3"), Some(true), "the last word holds");
    }
}
