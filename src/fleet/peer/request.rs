//! The request a peer reads: at most [`MAX_REQUEST`] bytes, of this kapell's protocol version,
//! in exactly the protocol's shape ([`crate::fleet::protocol`] reads it strictly, as a stream).
//! The version is read first, on its own, so a controller of another version learns that
//! rather than which of its keys this peer does not know.

use crate::fleet::protocol::{Envelope, Request, VERSION};
use anyhow::Result;

/// Requests larger than this are refused (a set of 10,000 units is a few MiB).
pub const MAX_REQUEST: u64 = 64 * 1024 * 1024;

/// Parses one request; the error says what is wrong and where (line and column).
pub fn parse(input: &[u8]) -> Result<Request> {
    anyhow::ensure!(input.len() as u64 <= MAX_REQUEST, "the request is larger than {MAX_REQUEST} bytes");
    let Envelope { version } = serde_json::from_slice(input).map_err(|e| refusal(&e, "version"))?;
    if version != VERSION {
        anyhow::bail!(
            "this host's kapell speaks fleet protocol {VERSION}, the controller sent version {version}: \
             install the same kapell version on the controller and this host"
        );
    }
    serde_json::from_slice(input).map_err(|e| refusal(&e, "shape"))
}

/// A parse error as the reply states it: bad JSON, or JSON that is not a request (and how).
fn refusal(e: &serde_json::Error, reading: &str) -> anyhow::Error {
    match e.classify() {
        serde_json::error::Category::Io | serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            anyhow::anyhow!("the request is not valid JSON: {e}")
        }
        serde_json::error::Category::Data if reading == "version" => {
            anyhow::anyhow!("the request's version is malformed: {e}")
        }
        serde_json::error::Category::Data => anyhow::anyhow!("the request is malformed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::pushed_health::InstanceHealth;
    use crate::fleet::protocol::{Body, HostSet};
    use crate::unitset::OutputFile;

    fn refused(text: &str) -> String {
        format!("{:#}", parse(text.as_bytes()).expect_err(text))
    }

    fn set_json() -> String {
        let set = HostSet::from_rendered(&[
            OutputFile::unit("a.target", "[Unit]\nX-Kapell-Stack=a\n"),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
        ]);
        serde_json::to_string(&set).expect("json")
    }

    #[test]
    fn what_the_controller_sends_is_read_back() {
        let set: HostSet = serde_json::from_str(&set_json()).expect("set");
        for body in [
            Body::Install {
                set: set.clone(),
                known: vec!["ab".into()],
                force: true,
                retry: true,
                confirm_within: Some(30),
                health: Some(vec![InstanceHealth {
                    stack: "data".into(),
                    service: "db".into(),
                    host: "h3".into(),
                    healthy: true,
                }]),
                same_catalog: false,
            },
            Body::Install {
                set: set.clone(),
                known: vec![],
                force: false,
                retry: false,
                confirm_within: None,
                health: None,
                same_catalog: true,
            },
            Body::Install {
                set,
                known: vec![],
                force: false,
                retry: false,
                confirm_within: None,
                health: None,
                same_catalog: false,
            },
            Body::Repair { hash: "ab".into(), health: Some(vec![]) },
            Body::Repair { hash: "ab".into(), health: None },
            Body::Confirm { hash: "ab".into() },
            Body::Rollback { hash: None },
            Body::Rollback { hash: Some("ab".into()) },
            Body::Status,
        ] {
            let request = Request { version: VERSION, body };
            let text = serde_json::to_vec(&request).expect("json");
            assert_eq!(parse(&text).expect("parse"), request);
        }
        // Fields may come in any order; optional ones may be left out or null.
        let text = format!(r#"{{"set":{},"request":"install","version":1,"confirm_within":null}}"#, set_json());
        assert!(matches!(parse(text.as_bytes()).expect("parse").body, Body::Install { confirm_within: None, .. }));
        let text = format!(r#"{{"version":1,"request":"install","health":null,"set":{}}}"#, set_json());
        assert!(matches!(parse(text.as_bytes()).expect("parse").body, Body::Install { health: None, .. }));
    }

    #[test]
    fn versions_must_be_whole_numbers_and_ours() {
        assert!(refused(r#"{"request":"status"}"#).contains("missing field `version`"));
        for bad in [r#""1""#, "1.5", "-1", "4294967296", "null", "[1]"] {
            let e = refused(&format!(r#"{{"version":{bad},"request":"status"}}"#));
            assert!(e.starts_with("the request's version is malformed: "), "{bad}: {e}");
            assert!(e.contains("expected a fleet protocol version (a whole number such as 1) at line 1"), "{bad}: {e}");
        }
        // Another version is named as such even with keys this version does not know.
        let e = refused(r#"{"request":"status","future":true,"version":2}"#);
        assert!(e.contains("speaks fleet protocol 1, the controller sent version 2"), "{e}");
        assert!(refused(r#"{"version":1,"version":1,"request":"status"}"#).contains("duplicate field `version`"));
    }

    #[test]
    fn the_shape_is_strict() {
        let set = set_json();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "the request is not valid JSON: expected ident at line 1 column 2"),
            (r#"{"version":1,"request":"status"} x"#.into(), "not valid JSON: trailing characters"),
            ("[1,\"status\"]".into(), "the request's version is malformed"),
            (r#"{"version":1}"#.into(), "missing field `request`"),
            (r#"{"version":1,"request":"status","x":1}"#.into(), "unknown field `x`, expected one of"),
            (r#"{"version":1,"request":3}"#.into(), "invalid type: integer `3`, expected a string"),
            (r#"{"version":1,"request":"Status"}"#.into(), "unknown variant `Status`, expected one of"),
            (r#"{"version":1,"request":"status","request":"rollback"}"#.into(), "duplicate field `request`"),
            (r#"{"version":1,"request":"status","hash":"ab"}"#.into(), "`hash` is not a field of a `status` request"),
            (r#"{"version":1,"request":"confirm"}"#.into(), "missing field `hash`"),
            (r#"{"version":1,"request":"repair"}"#.into(), "missing field `hash`"),
            (format!(r#"{{"version":1,"request":"repair","hash":"ab","set":{set}}}"#), "`set` is not a field of a `repair`"),
            (r#"{"version":1,"request":"repair","hash":"ab","known":[]}"#.into(), "`known` is not a field of a `repair`"),
            (r#"{"version":1,"request":"repair","hash":"ab","force":true}"#.into(), "`force` is not a field of a `repair`"),
            (r#"{"version":1,"request":"repair","hash":"ab","retry":true}"#.into(), "`retry` is not a field of a `repair`"),
            (
                r#"{"version":1,"request":"repair","hash":"ab","confirm_within":3}"#.into(),
                "`confirm_within` is not a field of a `repair`",
            ),
            (
                r#"{"version":1,"request":"repair","hash":"ab","same_catalog":true}"#.into(),
                "`same_catalog` is not a field of a `repair`",
            ),
            (
                r#"{"version":1,"request":"confirm","hash":"ab","same_catalog":false}"#.into(),
                "`same_catalog` is not a field of a `confirm`",
            ),
            (r#"{"version":1,"request":"status","same_catalog":true}"#.into(), "`same_catalog` is not a field of a `status`"),
            (
                format!(r#"{{"version":1,"request":"install","set":{set},"same_catalog":1}}"#),
                "invalid type: integer `1`, expected a boolean",
            ),
            (r#"{"version":1,"request":"install"}"#.into(), "missing field `set`"),
            (format!(r#"{{"version":1,"request":"install","set":{set},"hash":"x"}}"#), "`hash` is not a field"),
            (format!(r#"{{"version":1,"request":"install","set":{set},"set":{set}}}"#), "duplicate field `set`"),
            (
                format!(r#"{{"version":1,"request":"install","set":{set},"health":[{{"stack":"a","service":"b","host":"h","healthy":true,"x":1}}]}}"#),
                "unknown field `x`",
            ),
            (
                format!(r#"{{"version":1,"request":"install","set":{set},"health":[{{"stack":"a","service":"b","host":"h"}}]}}"#),
                "missing field `healthy`",
            ),
            (
                format!(r#"{{"version":1,"request":"install","set":{set},"health":[],"health":[]}}"#),
                "duplicate field `health`",
            ),
            (
                format!(r#"{{"version":1,"request":"install","set":{set},"health":{{}}}}"#),
                "expected a list of at most 1000000 instances",
            ),
            (r#"{"version":1,"request":"confirm","hash":"ab","health":[]}"#.into(), "`health` is not a field of a `confirm`"),
            (r#"{"version":1,"request":"status","health":null}"#.into(), "`health` is not a field of a `status`"),
            (
                r#"{"version":1,"request":"install","set":{"files":{},"hash":"","extra":1}}"#.into(),
                "unknown field `extra`",
            ),
            (
                r#"{"version":1,"request":"install","set":{"files":{"a.target":{"kind":0,"text":"","sha256":""}},"hash":""}}"#
                    .into(),
                "invalid type: integer `0`, expected a string",
            ),
            (
                r#"{"version":1,"request":"install","set":{"files":{"a.target":{"kind":"unit","text":"","sha256":"","mode":1}},"hash":""}}"#
                    .into(),
                "unknown field `mode`",
            ),
            (
                r#"{"version":1,"request":"install","set":{"files":{"a.target":{"kind":"link","target":"x","text":""}},"hash":""}}"#
                    .into(),
                "`text` and `sha256` are not fields of a link",
            ),
            (
                r#"{"version":1,"request":"install","set":{"files":{"a.target":{"kind":"unit","text":"","sha256":""},"a.target":{"kind":"link","target":"x"}},"hash":""}}"#
                    .into(),
                "the set names the file \"a.target\" twice",
            ),
        ];
        for (text, want) in cases {
            let e = refused(&text);
            assert!(e.contains(want), "{text}\n  gave: {e}\n  want: {want}");
        }
    }

    #[test]
    fn lists_are_bounded() {
        let known = vec!["\"h\""; crate::fleet::protocol::MAX_KNOWN + 1].join(",");
        let text = format!(r#"{{"version":1,"request":"install","set":{},"known":[{known}]}}"#, set_json());
        assert!(refused(&text).contains("more than 1024 known hashes"));
        let files: Vec<String> = (0..=crate::fleet::protocol::MAX_FILES)
            .map(|i| format!(r#""u{i}.service":{{"kind":"link","target":"x"}}"#))
            .collect();
        let text =
            format!(r#"{{"version":1,"request":"install","set":{{"files":{{{}}},"hash":""}}}}"#, files.join(","));
        assert!(refused(&text).contains("the set has more than 100000 files"));
    }

    proptest::proptest! {
        /// Any object of request keys and small values: parsed, or refused with a sentence, never
        /// a panic; and whatever parses serializes back to the same request.
        #[test]
        fn arbitrary_objects_parse_or_are_refused(
            keys in proptest::collection::vec(
                proptest::sample::select(vec!["version", "request", "set", "known", "force", "retry", "confirm_within", "hash", "health", "x"]),
                0..6,
            ),
            values in proptest::collection::vec(
                proptest::sample::select(vec!["1", "0", "\"status\"", "\"install\"", "\"repair\"", "\"confirm\"", "true", "null", "[]", "{\"files\":{},\"hash\":\"\"}", "\"ab\""]),
                6,
            ),
        ) {
            let body: Vec<String> = keys.iter().zip(&values).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let text = format!("{{{}}}", body.join(","));
            if let Ok(request) = parse(text.as_bytes()) {
                let again = serde_json::to_vec(&request).expect("json");
                proptest::prop_assert_eq!(parse(&again).expect("reparse"), request);
            }
        }
    }
}
