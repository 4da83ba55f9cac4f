//! What travels over SSH between a controller and `kapell receive` (see docs/fleet-protocol.md):
//! one JSON request on the peer's stdin, one JSON reply on its stdout. The one module both sides
//! of the fleet share.
//!
//! Every message carries [`VERSION`]. A peer refuses a request of a newer version with a reply
//! that says so (and which versions it speaks), so an old peer never half-understands a bundle.
//! Unit sets travel whole, with a SHA-256 per file and one for the set: the peer recomputes them
//! and refuses a set whose hashes do not match (a truncated or altered transfer).

use crate::discovery::pushed_health::InstanceHealth;
use crate::render::OutputFile;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

mod strict;
pub use strict::{Envelope, MAX_FILES, MAX_HEALTH, MAX_KNOWN};

/// The protocol version this kapell speaks. (A set's `catalog` is an optional field: a peer
/// that does not know it refuses such a set by its strict shape, naming the field.)
pub const VERSION: u32 = 1;

/// The remote command a controller runs on a peer; a key pinned with `command="kapell receive"`
/// runs nothing else.
pub const RECEIVE_COMMAND: &str = "kapell receive";

/// A request to a peer. Read strictly ([`strict`]): unknown or repeated keys are refused.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Body {
    /// Make this the host's received set, and make systemd run it; repairs drift (units stopped,
    /// edited, deleted or masked outside kapell) on the way.
    Install {
        set: HostSet,
        /// Hashes of sets this controller pushed to the host. A host running a set outside this
        /// list (edited by hand, another controller's) is not overwritten unless `force`.
        #[serde(default)]
        known: Vec<String>,
        /// Overwrite whatever the host runs, and install the set even if the host rolled it back
        /// before (`kapell fleet apply --force`).
        #[serde(default)]
        force: bool,
        /// Install the set even if this host rolled it back before (`kapell fleet rollout
        /// retry`); a set this controller did not push is still not overwritten.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry: bool,
        /// Seconds the controller has to confirm the new set before the peer reverts it on its
        /// own; `None`: the set counts as confirmed at once.
        #[serde(default)]
        confirm_within: Option<u64>,
        /// The health of the fleet's instances that no responder can probe (see
        /// docs/discovery.md), as the controller last saw it; kept by the peer apart from the
        /// set (never part of its hash). `None`: the peer keeps the word it has.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<Vec<InstanceHealth>>,
        /// The set's `catalog` is left out: it is the catalog of the set the host runs, which the
        /// host's last reply named by its hash (`catalog_hash`). The peer puts it back before it
        /// checks the set's hash, so a host whose catalog is another one refuses the install, and
        /// the controller sends the catalog. A catalog grows with the fleet (about 80 bytes per
        /// instance placed), and most changes (a new version, a setting) leave it as it is.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        same_catalog: bool,
    },
    /// The install of a set the host already runs, named by its hash rather than sent again: the
    /// peer repairs drift on its current set as an install of it would, and takes `health`. A
    /// host that runs another set refuses it (the reply's `current` says which), and the
    /// controller sends the whole set. A no-op pass costs a few hundred bytes per host, not the
    /// set and the fleet's catalog, which grows with the fleet.
    Repair {
        hash: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health: Option<Vec<InstanceHealth>>,
    },
    /// The controller saw the set with this hash active and healthy: keep it.
    Confirm { hash: String },
    /// Go back to the last confirmed set; with `hash`, from the set with that hash, confirmed or
    /// not, to the set the host ran before it (a host of an earlier batch of a rollout that
    /// failed later). A host that runs another set changes nothing.
    Rollback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    /// Report the received set and the state of its units; change nothing.
    Status,
}

/// A set's files by path.
pub type Files = BTreeMap<String, SetFile>;

impl Body {
    /// The request's kind, as it travels (`"request": "install"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Install { .. } => "install",
            Body::Repair { .. } => "repair",
            Body::Confirm { .. } => "confirm",
            Body::Rollback { .. } => "rollback",
            Body::Status => "status",
        }
    }
}

/// The unit set of one host: unit files and `*.wants/` links by path, the fleet's discovery
/// catalog and the host's name in it, plus the set's hash.
///
/// Hosts with the same placement share one `files` and every host shares the one `catalog`
/// (clones of an `Arc`): a controller of 10,000 hosts holds one copy of each, not one per host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSet {
    #[serde(deserialize_with = "strict::unique_files")]
    pub files: Arc<Files>,
    /// The fleet's discovery catalog (`catalog.json` beside the units in the generation, see
    /// docs/discovery.md), as JSON text, the same for every host; `None` when no service of the
    /// fleet is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<Arc<str>>,
    /// The name the fleet gives this host, with a catalog only: which of the catalog's instances
    /// are its own (`catalog-host` beside `catalog.json`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// [`HostSet::compute_hash`] of `files`, `catalog` and `host`.
    pub hash: String,
}

/// A set's hash in two steps: the files and the catalog, which hosts of one placement share,
/// then the host's name. A controller hashes what hosts share once, not once per host (the
/// catalog of a fleet grows with its hosts, so hashing it per host would grow with their square).
#[derive(Clone)]
pub struct SetHasher {
    shared: Sha256,
    with_catalog: bool,
}

impl SetHasher {
    pub fn new(files: &Files, catalog: Option<&str>) -> SetHasher {
        let mut hasher = Sha256::new();
        for (path, file) in files {
            let (kind, content) = match file {
                SetFile::Unit { text, .. } => (b'u', text.as_str()),
                SetFile::Link { target } => (b'l', target.as_str()),
            };
            field(&mut hasher, kind, path);
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(content.as_bytes());
        }
        // A set without a catalog hashes as it did before catalogs existed.
        if let Some(catalog) = catalog {
            field(&mut hasher, b'c', catalog);
        }
        SetHasher { shared: hasher, with_catalog: catalog.is_some() }
    }

    /// The hash of the set for `host`, whose name counts only with a catalog. Without a name (no
    /// catalog, or a generation from before the name travelled beside the catalog) a set hashes
    /// as it did before.
    pub fn finish(&self, host: &str) -> String {
        let mut hasher = self.shared.clone();
        if self.with_catalog && !host.is_empty() {
            field(&mut hasher, b'h', host);
        }
        hex(&hasher.finalize())
    }
}

/// One tagged, length-prefixed field of a set's hash.
fn field(hasher: &mut Sha256, kind: u8, text: &str) {
    hasher.update([kind]);
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

/// Rendered files as a set's files, each unit with its hash.
pub fn files_of(files: &[OutputFile]) -> Files {
    files
        .iter()
        .map(|f| match f {
            OutputFile::Unit { name, text } => {
                (name.clone(), SetFile::Unit { text: text.clone(), sha256: sha256(text.as_bytes()) })
            }
            OutputFile::Link { path, target } => (path.clone(), SetFile::Link { target: target.clone() }),
        })
        .collect()
}

/// Read strictly ([`strict`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SetFile {
    Unit { text: String, sha256: String },
    Link { target: String },
}

impl HostSet {
    /// The set of rendered files, hashed.
    pub fn from_rendered(files: &[OutputFile]) -> HostSet {
        HostSet::new(Arc::new(files_of(files)), None, "")
    }

    /// The set of `files` and, when the fleet places services, its `catalog` with this host's
    /// name in it (without a catalog the name is not part of the set); hashed.
    pub fn new(files: Arc<Files>, catalog: Option<Arc<str>>, host: &str) -> HostSet {
        let hash = SetHasher::new(&files, catalog.as_deref()).finish(host);
        HostSet::hashed(files, catalog, host, hash)
    }

    /// The set of `files`, `catalog` and `host` whose hash (what [`HostSet::compute_hash`]
    /// gives) the caller already knows, from a reply or a [`SetHasher`] shared by many hosts.
    pub fn hashed(files: Arc<Files>, catalog: Option<Arc<str>>, host: &str, hash: String) -> HostSet {
        let host = if catalog.is_some() { host.to_string() } else { String::new() };
        HostSet { files, catalog, host, hash }
    }

    /// The files as the renderer's type, for writing and planning.
    pub fn to_rendered(&self) -> Vec<OutputFile> {
        self.files
            .iter()
            .map(|(path, f)| match f {
                SetFile::Unit { text, .. } => OutputFile::Unit { name: path.clone(), text: text.clone() },
                SetFile::Link { target } => OutputFile::Link { path: path.clone(), target: target.clone() },
            })
            .collect()
    }

    /// SHA-256 over every path and content in path order, each field length-prefixed so no two
    /// different sets hash alike, then the catalog and the host's name in it. The empty set has
    /// a hash too (a host that runs nothing).
    pub fn compute_hash(&self) -> String {
        SetHasher::new(&self.files, self.catalog.as_deref()).finish(&self.host)
    }

    /// Checks every file's hash and the set's hash; the first mismatch, as a sentence.
    pub fn verify(&self) -> Result<(), String> {
        for (path, file) in self.files.iter() {
            if let SetFile::Unit { text, sha256: sum } = file
                && sha256(text.as_bytes()) != *sum
            {
                return Err(format!("{path} does not match its hash (altered or truncated in transit)"));
            }
        }
        if self.compute_hash() != self.hash {
            return Err("the set does not match its hash (altered or truncated in transit)".to_string());
        }
        Ok(())
    }

    /// The unit names of the set (not the links).
    pub fn units(&self) -> impl Iterator<Item = &str> {
        self.files.iter().filter(|(_, f)| matches!(f, SetFile::Unit { .. })).map(|(p, _)| p.as_str())
    }

    /// The first 12 hex digits of the hash, for people.
    pub fn short_hash(&self) -> &str {
        short(&self.hash)
    }
}

/// The first 12 hex digits of a hash (the first 12 characters of anything else).
pub fn short(hash: &str) -> &str {
    hash.char_indices().nth(12).map_or(hash, |(end, _)| &hash[..end])
}

/// A SHA-256 in lowercase hex, as [`sha256`] writes it.
fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The peer's reply to any request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub version: u32,
    /// The peer's host name (as it calls itself).
    pub host: String,
    /// `None`: the request was carried out (units may still have failed: see `failures`).
    /// `Some`: it was refused or failed as a whole, and nothing was changed unless `changed`.
    pub error: Option<String>,
    /// The hash of the set the peer has now (empty: none received yet).
    pub current: String,
    /// Files of the current set, for `fleet plan`'s diffs and a rollout's decision: filled in
    /// the reply to `Status` only (the controller knows the sets it pushes).
    pub files: Arc<Files>,
    /// Whether this request changed the host.
    pub changed: bool,
    /// Files of the set that this install added, changed and removed.
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// What was done, one line per unit action (the same lines as `kapell apply`).
    pub actions: Vec<String>,
    /// Units that failed to stop or start.
    pub failures: usize,
    /// Units of the set that a local stack of the peer also produces: the local one wins.
    pub conflicts: Vec<String>,
    /// The state of every unit of the current set.
    pub units: Vec<UnitState>,
    /// The outcome of the last install, if it ended without anyone reading it (the connection
    /// dropped): what the next request learns.
    pub last_install: Option<Box<Reply>>,
    /// The hash of the last set the controller confirmed (empty: none).
    pub confirmed: String,
    /// A new set waiting for confirmation: its hash and the deadline (µs since the epoch).
    pub pending: Option<(String, u64)>,
    /// Set when this host went back to its confirmed set on its own, with why.
    pub rolled_back: Option<String>,
    /// Set when an install was not carried out because this host rolled that very set back
    /// before (it is not installed again until it changes, unless forced), with why.
    pub held: Option<String>,
    /// Set when the request named what this host does not hold (a repair of another set than
    /// the one it runs, an install that left out a catalog it does not have): nothing was
    /// changed, and the whole set, sent as an install, is what it needs. No other error is
    /// mended by sending the request another way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_whole_set: bool,
    /// Set, with an error, when an install was refused because this host runs a set the
    /// controller did not push (none of its `known` hashes: edited by hand, another
    /// controller's): nothing was changed. A rollout holds such a host on its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign_set: bool,
    /// The last journal lines of every failing unit, for the controller's report.
    pub journal: BTreeMap<String, Vec<String>>,
    /// What this host's `kapell dns` answers now: `<service>.<stack>.kapell` → hosts; empty when
    /// no responder runs.
    #[serde(default)]
    pub names: BTreeMap<String, Vec<crate::dns_state::Answer>>,
    /// The discovery catalog of the current set (with `files`, the whole set: what a repair of a
    /// held host pushes back).
    #[serde(default)]
    pub catalog: Option<Arc<str>>,
    /// The name the current set's catalog gives this host (with `catalog`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub set_host: String,
    /// The SHA-256 of the current set's catalog text (empty without one): what lets the
    /// controller leave the catalog out of the next install (`same_catalog`). In every reply but
    /// a confirmation's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub catalog_hash: String,
    /// The SHA-256 of the fleet's health word the peer holds (its `health.json`; empty without
    /// one): what lets the controller leave an unchanged word out of the next request. In every
    /// reply but a confirmation's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_hash: String,
}

impl Reply {
    /// The fields the controller compares, keeps in its state and shows as they are must be
    /// hashes (or empty): a reply with anything else there is not understood, so that a peer's
    /// text cannot add lines of its own to a report or grow the controller's state.
    pub fn check(&self) -> Result<(), String> {
        let hashes = [
            ("current", &self.current),
            ("confirmed", &self.confirmed),
            ("catalog_hash", &self.catalog_hash),
            ("health_hash", &self.health_hash),
        ];
        let pending = self.pending.as_ref().map(|(hash, _)| ("pending", hash));
        if let Some((name, _)) = hashes.into_iter().chain(pending).find(|(_, h)| !h.is_empty() && !is_hash(h)) {
            return Err(format!("its {name} is not a SHA-256 in hex"));
        }
        self.last_install.as_ref().map_or(Ok(()), |last| last.check())
    }

    /// The set the host runs, as far as a `Status` reply tells it (files, catalog, hash).
    pub fn current_set(&self) -> HostSet {
        HostSet::hashed(self.files.clone(), self.catalog.clone(), &self.set_host, self.current.clone())
    }
}

/// One unit of the set as the peer's systemd sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnitState {
    pub unit: String,
    pub stack: String,
    pub service: String,
    pub active: String,
    pub sub: String,
    /// µs since the epoch of the last state change (0: never).
    pub since_usec: u64,
    pub restarts: u32,
    /// The supervisor's `STATUS=` text (health of containers).
    pub status: String,
    /// The health check's state for this run of the unit (`starting`, `healthy`, `unhealthy`),
    /// containers and native services alike; `None` without a check (or from an older peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The last probe behind `health` (when, how long, the result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<crate::health::probe::Probe>,
}

impl UnitState {
    /// The health check's state as the peer's probes last saw it; `None`: the unit has no check
    /// (or is not running). `kapell fleet status` shows it and a rollout gates on it.
    pub fn health(&self) -> Option<crate::status::Health> {
        self.health.as_deref().and_then(crate::status::Health::parse)
    }
}

/// The unit names among `paths` (not the links).
pub fn units_only(paths: &[String]) -> usize {
    paths.iter().filter(|p| !p.contains('/')).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's reply carries hashes where the controller compares, keeps and shows hashes:
    /// anything else there (a line break forging a report line, megabytes) is not understood.
    #[test]
    fn a_reply_must_carry_hashes_where_it_has_hashes() {
        let hash = sha256(b"set");
        let good = Reply { current: hash.clone(), pending: Some((hash.clone(), 1)), ..Reply::default() };
        assert_eq!(good.check(), Ok(()));
        assert_eq!(Reply::default().check(), Ok(()));
        let forged = Reply { current: format!("{hash}\nweb7  converged"), ..Reply::default() };
        assert!(forged.check().is_err_and(|e| e.contains("current")));
        let upper = Reply { confirmed: hash.to_uppercase(), ..Reply::default() };
        assert!(upper.check().is_err());
        let nested = Reply { last_install: Some(Box::new(Reply { current: "x".into(), ..Reply::default() })), ..good };
        assert!(nested.check().is_err());
        // `short` cuts at a character, whatever it is given.
        assert_eq!(short("ééééééééééééé"), "éééééééééééé");
        assert_eq!(short(&hash), &hash[..12]);
    }

    fn set() -> HostSet {
        HostSet::from_rendered(&[
            OutputFile::unit("a.target", "[Unit]\n"),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
        ])
    }

    #[test]
    fn hashes_detect_any_change() {
        let good = set();
        assert!(good.verify().is_ok());
        let mut bad = good.clone();
        if let Some(SetFile::Unit { text, .. }) = Arc::make_mut(&mut bad.files).get_mut("a.target") {
            text.push('x');
        }
        assert!(bad.verify().expect_err("altered").contains("a.target"));
        let mut moved = good.clone();
        let files = Arc::make_mut(&mut moved.files);
        let file = files.remove("a.target").expect("file");
        files.insert("b.target".into(), file);
        assert!(moved.verify().is_err());
        assert_ne!(HostSet::from_rendered(&[]).hash, good.hash);
        // The catalog and the host's name in it count too.
        let with = |catalog: &str, host: &str| HostSet::new(good.files.clone(), Some(Arc::from(catalog)), host);
        assert!(with("{}", "h1").verify().is_ok());
        let hashes = [good.hash.clone(), with("{}", "h1").hash, with("{}", "h2").hash, with("{ }", "h1").hash];
        assert_eq!(hashes.iter().collect::<std::collections::BTreeSet<_>>().len(), 4, "{hashes:?}");
        let mut renamed = with("{}", "h1");
        renamed.host = "h2".into();
        assert!(renamed.verify().is_err(), "a set moved to another host's name");
        let no_catalog = HostSet::new(good.files.clone(), None, "h1");
        assert_eq!((no_catalog.host.as_str(), &no_catalog.hash), ("", &good.hash), "a name without a catalog");
        assert!(no_catalog.verify().is_ok());
    }

    #[test]
    fn hosts_that_share_files_and_the_catalog_share_the_first_step_of_the_hash() {
        let files = set().files;
        let catalog: Arc<str> = Arc::from("{\"version\":1,\"host\":\"\",\"services\":[]}\n");
        let shared = SetHasher::new(&files, Some(&catalog));
        for host in ["h1", "h2", "a-much-longer-host-name"] {
            let alone = HostSet::new(files.clone(), Some(catalog.clone()), host);
            assert_eq!(shared.finish(host), alone.hash, "{host}");
            assert_eq!(alone.compute_hash(), alone.hash);
        }
    }

    /// Sets received before the host's name travelled beside the catalog (the name was inside
    /// it) keep their hashes, so a controller still knows them as its own after an upgrade.
    #[test]
    fn a_set_without_a_host_name_hashes_as_before() {
        let good = set();
        let catalog = "{\"version\":1,\"host\":\"h1\",\"services\":[]}\n";
        let mut before = Sha256::new();
        for (path, file) in good.files.iter() {
            let (kind, content) = match file {
                SetFile::Unit { text, .. } => (b'u', text.as_str()),
                SetFile::Link { target } => (b'l', target.as_str()),
            };
            for (i, part) in [path.as_str(), content].into_iter().enumerate() {
                if i == 0 {
                    before.update([kind]);
                }
                before.update((part.len() as u64).to_le_bytes());
                before.update(part.as_bytes());
            }
        }
        before.update([b'c']);
        before.update((catalog.len() as u64).to_le_bytes());
        before.update(catalog.as_bytes());
        assert_eq!(HostSet::new(good.files.clone(), Some(Arc::from(catalog)), "").hash, hex(&before.finalize()));
    }

    #[test]
    fn requests_round_trip_as_json() {
        let request = Request {
            version: VERSION,
            body: Body::Install {
                set: set(),
                known: vec![],
                force: false,
                retry: true,
                confirm_within: Some(30),
                health: Some(vec![InstanceHealth {
                    stack: "data".into(),
                    service: "db".into(),
                    host: "h3".into(),
                    healthy: false,
                }]),
                same_catalog: false,
            },
        };
        let text = serde_json::to_string(&request).expect("json");
        assert!(text.contains("\"request\":\"install\""), "{text}");
        // An install with its catalog never says so: a peer from before `same_catalog` reads it.
        assert!(!text.contains("same_catalog"), "{text}");
        for body in [request.body.clone(), Body::Repair { hash: "ab".into(), health: None }, Body::Status] {
            let text = serde_json::to_string(&Request { version: VERSION, body: body.clone() }).expect("json");
            assert!(text.contains(&format!("\"request\":\"{}\"", body.kind())), "{text}");
        }
        assert_eq!(serde_json::from_str::<Request>(&text).expect("parse"), request);
    }
}
