//! The stack file an import writes: laid out and commented for a person who keeps editing it.

use super::Note;
use super::map::{Draft, Svc};
use std::fmt::Write as _;
use std::path::Path;

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key: bare when TOML allows it, quoted otherwise.
fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        q(k)
    }
}

/// A string array: on one line when short, else one item per line.
fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| q(i)).collect();
    let one_line = format!("[{}]", quoted.join(", "));
    if one_line.len() <= 72 && !one_line.contains('\n') {
        return one_line;
    }
    let mut out = String::from("[\n");
    for item in quoted {
        let _ = writeln!(out, "    {item},");
    }
    out.push(']');
    out
}

/// `key = value`, with a comment aligned after it when there is one.
fn line(out: &mut String, k: &str, value: &str, comment: Option<&str>) {
    match comment {
        Some(c) if !value.contains('\n') => {
            let text = format!("{} = {value}", key(k));
            let _ = writeln!(out, "{text:<40} # {c}");
        }
        Some(c) => {
            let _ = writeln!(out, "# {c}");
            let _ = writeln!(out, "{} = {value}", key(k));
        }
        None => {
            let _ = writeln!(out, "{} = {value}", key(k));
        }
    }
}

fn float(x: f64) -> String {
    let text = format!("{x}");
    if text.contains('.') { text } else { format!("{text}.0") }
}

pub(super) fn write(draft: &Draft, source: &Path, notes: &[Note]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Stack `{}`, imported by `kapell import compose` from", draft.stack);
    let _ = writeln!(out, "#   {}", source.display());
    let _ = writeln!(
        out,
        "# Check it with `kapell check`, install it as /etc/kapell/{}.toml, then `kapell apply`.",
        draft.stack
    );
    let _ = writeln!(out, "# Services reach each other by service name on the stack network kapell-{}.", draft.stack);
    let lost: Vec<&Note> = notes.iter().filter(|n| n.lossy).collect();
    if lost.is_empty() {
        let _ = writeln!(out, "# Everything in the Compose file was carried over.");
    } else {
        let _ = writeln!(out, "#");
        let _ = writeln!(out, "# Not carried over (see the import's warnings for what to do):");
        let mut places: Vec<(&str, usize)> = Vec::new();
        for n in lost {
            match places.iter_mut().find(|(p, _)| *p == n.place) {
                Some((_, count)) => *count += 1,
                None => places.push((&n.place, 1)),
            }
        }
        for (place, count) in places {
            match count {
                1 => writeln!(out, "#   - {place}"),
                n => writeln!(out, "#   - {place} ({n} items)"),
            }
            .ok();
        }
    }
    for svc in &draft.services {
        out.push('\n');
        service(&mut out, svc);
    }
    for (name, file) in &draft.secrets {
        let _ = writeln!(out, "\n[secrets.{}]", key(name));
        line(&mut out, "file", &q(file), Some("mounted read-only at /run/secrets/<name>"));
    }
    out
}

fn service(out: &mut String, s: &Svc) {
    if s.name != s.compose_name {
        let _ = writeln!(out, "# Compose service `{}`", s.compose_name);
    }
    let _ = writeln!(out, "[services.{}]", s.name);
    if let Some(c) = &s.image_comment {
        let _ = writeln!(out, "# Image {c}");
    }
    line(out, "image", &q(&s.image), None);
    if let Some(p) = s.pull {
        line(out, "pull", &q(p), (p == "never" && s.image_comment.is_some()).then_some("a local image"));
    }
    if let Some(e) = &s.entrypoint {
        line(out, "entrypoint", &array(e), None);
    }
    if let Some(c) = &s.command {
        line(out, "command", &array(c), None);
    }
    if !s.requires.is_empty() {
        line(out, "requires", &array(&s.requires), Some("started after these are ready; stopped with them"));
    }
    if !s.wants.is_empty() {
        line(out, "wants", &array(&s.wants), Some("started after these; survives their failure"));
    }
    if let Some(n) = s.replicas {
        line(out, "replicas", &n.to_string(), None);
    }
    if let Some(u) = &s.user {
        line(out, "user", &q(u), None);
    }
    if !s.ports.is_empty() {
        line(out, "ports", &array(&s.ports), None);
    }
    if !s.volumes.is_empty() {
        if s.volumes.iter().all(|(_, c)| c.is_none()) {
            let v: Vec<String> = s.volumes.iter().map(|(v, _)| v.clone()).collect();
            line(out, "volumes", &array(&v), None);
        } else {
            out.push_str("volumes = [\n");
            for (v, c) in &s.volumes {
                match c {
                    Some(c) => {
                        let item = format!("    {},", q(v));
                        let _ = writeln!(out, "{item:<40} # {c}");
                    }
                    None => {
                        let _ = writeln!(out, "    {},", q(v));
                    }
                }
            }
            out.push_str("]\n");
        }
    }
    if let Some((n, c)) = &s.network {
        line(out, "network", &q(n), Some(c));
    }
    if !s.env_files.is_empty() {
        line(out, "env_files", &array(&s.env_files), None);
    }
    if !s.secrets.is_empty() {
        line(out, "secrets", &array(&s.secrets), None);
    }
    line(out, "restart", &q(s.restart), s.restart_comment);
    if let Some(d) = &s.restart_delay {
        line(out, "restart_delay", &q(d), None);
    }
    if let Some(d) = &s.stop_timeout {
        line(out, "stop_timeout", &q(d), Some("Compose: stop_grace_period"));
    }
    if let Some(m) = &s.memory_max {
        line(out, "memory_max", &q(m), None);
    }
    if let Some(c) = s.cpus {
        line(out, "cpus", &float(c), None);
    }
    if let Some(p) = s.pids_max {
        line(out, "pids_max", &p.to_string(), None);
    }
    if let Some(h) = &s.health {
        let _ = writeln!(out, "\n[services.{}.health]", s.name);
        match &h.host_check {
            Some(super::health::HostCheck::Http { port, path, expect }) => {
                line(out, "http", &port.to_string(), None);
                if path != "/" {
                    line(out, "path", &q(path), None);
                }
                if let Some(e) = expect {
                    line(out, "expect", &q(e), Some("curl without --fail passes on any answer"));
                }
            }
            Some(super::health::HostCheck::Tcp { port }) => line(out, "tcp", &port.to_string(), None),
            None => line(out, "cmd", &array(&h.cmd), None),
        }
        for (k, v) in [("interval", &h.interval), ("timeout", &h.timeout), ("start_period", &h.start_period)] {
            if let Some(v) = v {
                line(out, k, &q(v), None);
            }
        }
        if let Some(r) = h.retries {
            line(out, "retries", &r.to_string(), None);
        }
    }
    if !s.env.is_empty() {
        let _ = writeln!(out, "\n[services.{}.env]", s.name);
        for (k, v) in &s.env {
            line(out, k, &q(v), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_toml() {
        assert_eq!(q("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(key("POSTGRES_DB"), "POSTGRES_DB");
        assert_eq!(key("a.b"), "\"a.b\"");
        assert_eq!(float(2.0), "2.0");
        assert_eq!(float(0.5), "0.5");
    }

    proptest::proptest! {
        /// Whatever a value holds, the TOML written for it reads back as the same strings.
        #[test]
        fn strings_and_arrays_read_back(items in proptest::collection::vec("\\PC*|[\\x00-\\x1f\"\\\\]*", 0..20)) {
            let mut text = format!("a = {}\nb = {}\n", array(&items), q(items.first().map_or("", String::as_str)));
            let mut out = String::new();
            line(&mut out, "c", &array(&items), Some("a comment"));
            text.push_str(&out);
            let table: toml::Table = text.parse().map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
            let read = |k: &str| -> Vec<String> {
                table[k].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
            };
            proptest::prop_assert_eq!(read("a"), items.clone());
            proptest::prop_assert_eq!(read("c"), items.clone());
            proptest::prop_assert_eq!(table["b"].as_str(), Some(items.first().map_or("", String::as_str)));
        }
    }

    #[test]
    fn long_arrays_break_into_lines() {
        assert_eq!(array(&["a".into(), "b".into()]), "[\"a\", \"b\"]");
        let long: Vec<String> = (0..12).map(|i| format!("--option-{i}")).collect();
        let text = array(&long);
        assert!(text.starts_with("[\n    \"--option-0\",\n") && text.ends_with(",\n]"), "{text}");
    }
}
