//! How a peer reads a request: strictly and as a stream (see docs/fleet-protocol.md). A key the
//! protocol does not have, a key given twice, a request kind or file kind that is not one of
//! the names, or a field of another kind of request is an error the moment the parser reaches
//! it, so nothing is buffered on the way: the memory a request takes is that of the set it
//! carries, whatever else it holds. (serde's derived internally tagged enums would first
//! buffer every key of the object, and accept a variant's index for its name.)

use super::{Body, HostSet, InstanceHealth, Request, SetFile};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// The most files a set may have (a set of 10,000 units is a few MiB).
pub const MAX_FILES: usize = 100_000;

/// The most `known` hashes an install may carry (a controller sends the last 32 it pushed).
pub const MAX_KNOWN: usize = 1024;

/// The most instances an install's `health` may name (one per service and host).
pub const MAX_HEALTH: usize = 1_000_000;

/// The request kinds, by the names they travel under.
const KINDS: &[&str] = &["install", "repair", "confirm", "rollback", "status"];

/// Reads `value` into `slot`, unless the key came before.
macro_rules! once {
    ($slot:expr, $name:literal, $value:expr) => {{
        if $slot.is_some() {
            return Err(de::Error::duplicate_field($name));
        }
        $slot = Some($value?);
    }};
}

/// The version of a message, read on its own before anything else: a request of another
/// version is answered with the versions each side speaks, not with its first unknown key.
/// Every other key is skipped unread.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Envelope {
    pub version: u32,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EnvelopeKey {
    Version,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fleet message (a JSON object with a `version`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut version = None;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Version => once!(version, "version", map.next_value_seed(VersionSeed)),
                EnvelopeKey::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Envelope { version: version.ok_or_else(|| de::Error::missing_field("version"))? })
    }
}

struct VersionVisitor;

impl Visitor<'_> for VersionVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fleet protocol version (a whole number such as 1)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

/// A protocol version: a whole number, nothing else (not `"1"`, not `1.0`).
fn version<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_u64(VersionVisitor)
}

/// A version for [`MapAccess::next_value_seed`].
struct VersionSeed;

impl<'de> DeserializeSeed<'de> for VersionSeed {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        version(d)
    }
}

/// Every key a request may have, of any kind.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum RequestKey {
    Version,
    Request,
    Set,
    Known,
    Force,
    Retry,
    ConfirmWithin,
    Hash,
    Health,
    SameCatalog,
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fleet request (a JSON object with `version` and `request`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
        let (mut version, mut kind, mut set, mut known, mut force, mut confirm_within, mut hash, mut health) =
            (None, None, None, None, None, None, None, None);
        let (mut same_catalog, mut retry) = (None, None);
        while let Some(key) = map.next_key::<RequestKey>()? {
            match key {
                RequestKey::Version => once!(version, "version", map.next_value_seed(VersionSeed)),
                RequestKey::Request => once!(kind, "request", map.next_value::<String>()),
                RequestKey::Set => once!(set, "set", map.next_value::<HostSet>()),
                RequestKey::Known => {
                    once!(known, "known", map.next_value_seed(AtMost::<String>::new(MAX_KNOWN, "known hashes")))
                }
                RequestKey::Force => once!(force, "force", map.next_value::<bool>()),
                RequestKey::Retry => once!(retry, "retry", map.next_value::<bool>()),
                RequestKey::ConfirmWithin => once!(confirm_within, "confirm_within", map.next_value::<Option<u64>>()),
                RequestKey::Hash => once!(hash, "hash", map.next_value::<String>()),
                RequestKey::SameCatalog => once!(same_catalog, "same_catalog", map.next_value::<bool>()),
                RequestKey::Health => {
                    once!(
                        health,
                        "health",
                        map.next_value_seed(Nullable(AtMost::<InstanceHealth>::new(MAX_HEALTH, "instances")))
                    )
                }
            }
        }
        let version = version.ok_or_else(|| de::Error::missing_field("version"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("request"))?;
        // Fields the kind does not have are refused, not ignored: each kind names the fields it
        // has, and the first other one present is the error.
        let present = [
            ("set", set.is_some()),
            ("known", known.is_some()),
            ("force", force.is_some()),
            ("retry", retry.is_some()),
            ("confirm_within", confirm_within.is_some()),
            ("hash", hash.is_some()),
            ("health", health.is_some()),
            ("same_catalog", same_catalog.is_some()),
        ];
        let only = |fields: &[&str]| match present.iter().find(|(field, p)| *p && !fields.contains(field)) {
            Some((field, _)) => Err(de::Error::custom(format_args!("`{field}` is not a field of a `{kind}` request"))),
            None => Ok(()),
        };
        let body = match kind.as_str() {
            "install" => {
                only(&["set", "known", "force", "retry", "confirm_within", "health", "same_catalog"])?;
                Body::Install {
                    set: set.ok_or_else(|| de::Error::missing_field("set"))?,
                    known: known.unwrap_or_default(),
                    force: force.unwrap_or_default(),
                    retry: retry.unwrap_or_default(),
                    confirm_within: confirm_within.flatten(),
                    health: health.flatten(),
                    same_catalog: same_catalog.unwrap_or_default(),
                }
            }
            "repair" => {
                only(&["hash", "health"])?;
                Body::Repair { hash: hash.ok_or_else(|| de::Error::missing_field("hash"))?, health: health.flatten() }
            }
            "confirm" => {
                only(&["hash"])?;
                Body::Confirm { hash: hash.ok_or_else(|| de::Error::missing_field("hash"))? }
            }
            "rollback" => {
                only(&["hash"])?;
                Body::Rollback { hash }
            }
            "status" => {
                only(&[])?;
                Body::Status
            }
            other => return Err(de::Error::unknown_variant(other, KINDS)),
        };
        Ok(Request { version, body })
    }
}

/// A list of at most `max` elements: a longer one is refused at the element past the limit.
struct AtMost<T> {
    max: usize,
    what: &'static str,
    element: PhantomData<T>,
}

impl<T> AtMost<T> {
    fn new(max: usize, what: &'static str) -> Self {
        AtMost { max, what, element: PhantomData }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for AtMost<T> {
    type Value = Vec<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for AtMost<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", self.max, self.what)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            if items.len() == self.max {
                return Err(de::Error::custom(format_args!("more than {} {}", self.max, self.what)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

/// `null` or what the inner seed reads.
struct Nullable<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Nullable<S> {
    type Value = Option<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Nullable<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a list")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// The files of a set: each path once, at most [`MAX_FILES`].
pub fn unique_files<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<BTreeMap<String, SetFile>>, D::Error> {
    d.deserialize_map(FilesVisitor).map(Arc::new)
}

struct FilesVisitor;

impl<'de> Visitor<'de> for FilesVisitor {
    type Value = BTreeMap<String, SetFile>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the files of a set (an object of at most {MAX_FILES} paths)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut files = BTreeMap::new();
        while let Some(path) = map.next_key::<String>()? {
            if files.len() == MAX_FILES {
                return Err(de::Error::custom(format_args!("the set has more than {MAX_FILES} files")));
            }
            if files.contains_key(&path) {
                return Err(de::Error::custom(format_args!("the set names the file {path:?} twice")));
            }
            let file = map.next_value::<SetFile>()?;
            files.insert(path, file);
        }
        Ok(files)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum FileKey {
    Kind,
    Text,
    Sha256,
    Target,
}

impl<'de> Deserialize<'de> for SetFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SetFile, D::Error> {
        d.deserialize_map(SetFileVisitor)
    }
}

struct SetFileVisitor;

impl<'de> Visitor<'de> for SetFileVisitor {
    type Value = SetFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a file of a set (an object with `kind` \"unit\" or \"link\")")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SetFile, A::Error> {
        let (mut kind, mut text, mut sha256, mut target) = (None, None, None, None);
        while let Some(key) = map.next_key::<FileKey>()? {
            match key {
                FileKey::Kind => once!(kind, "kind", map.next_value::<String>()),
                FileKey::Text => once!(text, "text", map.next_value::<String>()),
                FileKey::Sha256 => once!(sha256, "sha256", map.next_value::<String>()),
                FileKey::Target => once!(target, "target", map.next_value::<String>()),
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        match kind.as_str() {
            "unit" if target.is_some() => Err(de::Error::custom("`target` is not a field of a unit")),
            "unit" => Ok(SetFile::Unit {
                text: text.ok_or_else(|| de::Error::missing_field("text"))?,
                sha256: sha256.ok_or_else(|| de::Error::missing_field("sha256"))?,
            }),
            "link" if text.is_some() || sha256.is_some() => {
                Err(de::Error::custom("`text` and `sha256` are not fields of a link"))
            }
            "link" => Ok(SetFile::Link { target: target.ok_or_else(|| de::Error::missing_field("target"))? }),
            other => Err(de::Error::unknown_variant(other, &["unit", "link"])),
        }
    }
}
