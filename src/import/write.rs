//! The stack file an import writes: laid out and commented for a person who keeps editing it.
//!
//! Built as a TOML document (`toml_edit`): every key and value from the Compose file is a
//! toml_edit object, quoted and escaped by the library, so no input text can become TOML syntax.
//! The only text placed as-is is layout and comments, and every comment goes through
//! [`comment`], which makes any input one line of printable characters.

use super::Note;
use super::draft::{Draft, Svc};
use crate::printable::printable;
use std::path::Path;
use toml_edit::{Array, Decor, DocumentMut, Item, Key, Table, Value};

/// Where a comment after a value starts (`key = value` padded to this width).
const COMMENT_COLUMN: usize = 40;
/// A string array longer than this (on one line) gets one item per line.
const ONE_LINE_ARRAY: usize = 72;

/// `# text`, the text made one line of printable characters (input text may hold anything).
fn comment(text: &str) -> String {
    format!("# {}", printable(text))
}

/// Comment lines, each ending in a newline: a table's or a key's prefix.
fn comment_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    lines.into_iter().map(|l| if l.is_empty() { "#\n".to_string() } else { format!("{}\n", comment(l)) }).collect()
}

/// A string array: on one line when short, else one item per line.
fn array(items: &[String]) -> Value {
    let mut array: Array = items.iter().map(String::as_str).collect();
    array.fmt();
    if array.to_string().len() > ONE_LINE_ARRAY || array.to_string().contains('\n') {
        one_per_line(&mut array, &[]);
    }
    Value::Array(array)
}

/// Lays an array out one item per line, each with its comment (if any) after the item's comma.
fn one_per_line(array: &mut Array, comments: &[Option<String>]) {
    let mut pending: Option<String> = None;
    for (i, item) in array.iter_mut().enumerate() {
        let before = pending.take().unwrap_or_default();
        item.decor_mut().set_prefix("");
        item.decor_mut().set_suffix("");
        let width = format!("    {item},").chars().count();
        item.decor_mut().set_prefix(format!("{before}\n    "));
        if let Some(Some(c)) = comments.get(i) {
            pending = Some(format!("{:pad$}{}", "", comment(c), pad = COMMENT_COLUMN.saturating_sub(width) + 1));
        }
    }
    array.set_trailing_comma(true);
    array.set_trailing(format!("{}\n", pending.unwrap_or_default()));
}

/// Sets `key = value` in `table`, with a note after it (aligned) or above it (for a value on
/// several lines).
fn set(table: &mut Table, key: &str, mut value: Value, note: Option<&str>) {
    let key = Key::new(key);
    match note {
        Some(note) if !value.to_string().contains('\n') => {
            let width = format!("{} = {value}", key.display_repr()).chars().count();
            let pad = COMMENT_COLUMN.saturating_sub(width) + 1;
            value.decor_mut().set_suffix(format!("{:pad$}{}", "", comment(note)));
            value.decor_mut().set_prefix(" ");
        }
        Some(note) => return set_below(table, key.get(), value, note),
        None => {}
    }
    table.insert_formatted(&key, Item::Value(value));
}

/// Sets `key = value` in `table` below a comment line.
fn set_below(table: &mut Table, key: &str, value: Value, above: &str) {
    let key = Key::new(key).with_leaf_decor(Decor::new(comment_lines([above]), " "));
    table.insert_formatted(&key, Item::Value(value));
}

fn string(s: &str) -> Value {
    Value::from(s)
}

/// An integer of the stack (the schema's counts all fit an i64; larger ones were refused).
fn integer(n: u64) -> Value {
    Value::from(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The tables of the document in the order they are written.
struct Tables {
    next: isize,
}

impl Tables {
    fn table(&mut self, prefix: String) -> Table {
        let mut table = Table::new();
        table.set_position(Some(self.next));
        self.next += 1;
        table.decor_mut().set_prefix(prefix);
        table
    }
}

fn header(draft: &Draft, source: &Path, notes: &[Note]) -> String {
    let mut lines = vec![
        format!("Stack `{}`, imported by `kapell import compose` from", draft.stack),
        format!("  {}", source.display()),
        format!("Check it with `kapell check`, install it as /etc/kapell/{}.toml, then `kapell apply`.", draft.stack),
        format!("Services reach each other by service name on the stack network kapell-{}.", draft.stack),
    ];
    let lost: Vec<&Note> = notes.iter().filter(|n| n.lossy).collect();
    if lost.is_empty() {
        lines.push("Everything in the Compose file was carried over.".into());
    } else {
        lines.push(String::new());
        lines.push("Not carried over (see the import's warnings for what to do):".into());
        let mut places: Vec<(&str, usize)> = Vec::new();
        for n in lost {
            match places.iter_mut().find(|(p, _)| *p == n.place) {
                Some((_, count)) => *count += 1,
                None => places.push((&n.place, 1)),
            }
        }
        for (place, count) in places {
            lines.push(match count {
                1 => format!("  - {place}"),
                n => format!("  - {place} ({n} items)"),
            });
        }
    }
    comment_lines(lines.iter().map(String::as_str))
}

pub(super) fn write(draft: &Draft, source: &Path, notes: &[Note]) -> String {
    let mut doc = DocumentMut::new();
    let mut tables = Tables { next: 0 };
    let mut services = Table::new();
    services.set_implicit(true);
    let mut head = Some(header(draft, source, notes));
    for svc in &draft.services {
        let mut prefix = head.take().map_or_else(|| "\n".to_string(), |h| format!("{h}\n"));
        if svc.name != svc.compose_name {
            prefix.push_str(&comment_lines([format!("Compose service `{}`", svc.compose_name).as_str()]));
        }
        service(&mut services, &mut tables, prefix, svc);
    }
    doc.insert("services", Item::Table(services));
    if !draft.secrets.is_empty() {
        let mut secrets = Table::new();
        secrets.set_implicit(true);
        for (name, file) in &draft.secrets {
            let mut table = tables.table("\n".into());
            set(&mut table, "file", string(file), Some("mounted read-only at /run/secrets/<name>"));
            secrets.insert_formatted(&Key::new(name.as_str()), Item::Table(table));
        }
        doc.insert("secrets", Item::Table(secrets));
    }
    doc.to_string()
}

fn service(services: &mut Table, tables: &mut Tables, prefix: String, s: &Svc) {
    let mut t = tables.table(prefix);
    match &s.image_comment {
        Some(c) => set_below(&mut t, "image", string(&s.image), &format!("Image {c}")),
        None => set(&mut t, "image", string(&s.image), None),
    }
    if let Some(p) = s.pull {
        set(&mut t, "pull", string(p), (p == "never" && s.image_comment.is_some()).then_some("a local image"));
    }
    if let Some(e) = &s.entrypoint {
        set(&mut t, "entrypoint", array(e), None);
    }
    if let Some(c) = &s.command {
        set(&mut t, "command", array(c), None);
    }
    if !s.requires.is_empty() {
        set(&mut t, "requires", array(&s.requires), Some("started after these are ready; stopped with them"));
    }
    if !s.wants.is_empty() {
        set(&mut t, "wants", array(&s.wants), Some("started after these; survives their failure"));
    }
    if let Some(n) = s.replicas {
        set(&mut t, "replicas", integer(n), None);
    }
    if let Some(u) = &s.user {
        set(&mut t, "user", string(u), None);
    }
    if !s.ports.is_empty() {
        set(&mut t, "ports", array(&s.ports), None);
    }
    if !s.volumes.is_empty() {
        let items: Vec<String> = s.volumes.iter().map(|(v, _)| v.clone()).collect();
        if s.volumes.iter().all(|(_, c)| c.is_none()) {
            set(&mut t, "volumes", array(&items), None);
        } else {
            let mut volumes: Array = items.iter().map(String::as_str).collect();
            let comments: Vec<Option<String>> = s.volumes.iter().map(|(_, c)| c.clone()).collect();
            one_per_line(&mut volumes, &comments);
            set(&mut t, "volumes", Value::Array(volumes), None);
        }
    }
    if let Some((n, c)) = &s.network {
        set(&mut t, "network", string(n), Some(c));
    }
    if !s.env_files.is_empty() {
        set(&mut t, "env_files", array(&s.env_files), None);
    }
    if !s.secrets.is_empty() {
        set(&mut t, "secrets", array(&s.secrets), None);
    }
    set(&mut t, "restart", string(s.restart), s.restart_comment);
    if let Some(d) = &s.restart_delay {
        set(&mut t, "restart_delay", string(d), None);
    }
    if let Some(d) = &s.stop_timeout {
        set(&mut t, "stop_timeout", string(d), Some("Compose: stop_grace_period"));
    }
    if let Some(m) = &s.memory_max {
        set(&mut t, "memory_max", string(m), None);
    }
    if let Some(c) = s.cpus {
        set(&mut t, "cpus", Value::from(c), None);
    }
    if let Some(p) = s.pids_max {
        set(&mut t, "pids_max", integer(p), None);
    }
    if let Some(h) = &s.health {
        let mut health = tables.table("\n".into());
        match &h.host_check {
            Some(super::health::HostCheck::Http { port, path, expect }) => {
                set(&mut health, "http", integer(u64::from(*port)), None);
                if path != "/" {
                    set(&mut health, "path", string(path), None);
                }
                if let Some(e) = expect {
                    set(&mut health, "expect", string(e), Some("curl without --fail passes on any answer"));
                }
            }
            Some(super::health::HostCheck::Tcp { port }) => set(&mut health, "tcp", integer(u64::from(*port)), None),
            None => set(&mut health, "cmd", array(&h.cmd), None),
        }
        for (k, v) in [("interval", &h.interval), ("timeout", &h.timeout), ("start_period", &h.start_period)] {
            match v {
                Some(v) => set(&mut health, k, string(v), None),
                // kapell's default (2s) would fail a check Compose gives 30s to answer.
                None if k == "timeout" => set(&mut health, k, string("30s"), Some("Compose's default")),
                None => {}
            }
        }
        if let Some(r) = h.retries {
            set(&mut health, "retries", integer(r), None);
        }
        set(&mut t, "on_unhealthy", string("ignore"), Some("Compose does not restart an unhealthy container"));
        t.insert("health", Item::Table(health));
    }
    if !s.env.is_empty() {
        let mut env = tables.table("\n".into());
        for (k, v) in &s.env {
            set(&mut env, k, string(v), None);
        }
        t.insert("env", Item::Table(env));
    }
    services.insert_formatted(&Key::new(s.name.as_str()), Item::Table(t));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(table: Table) -> String {
        let mut doc = DocumentMut::new();
        for (k, v) in table.iter() {
            doc.insert(k, v.clone());
        }
        doc.to_string()
    }

    #[test]
    fn comments_are_one_printable_line() {
        assert_eq!(comment("a\n[services.x]\nexec = [\"/bin/sh\"]"), "# a\\n[services.x]\\nexec = [\"/bin/sh\"]");
        assert_eq!(comment_lines(["one", "", "two\r"]), "# one\n#\n# two\\r\n");
    }

    proptest::proptest! {
        /// Whatever a value or a note holds, the TOML written for it reads back as the same
        /// strings, and a note never adds a key.
        #[test]
        fn strings_arrays_and_notes_read_back(
            items in proptest::collection::vec("\\PC*|[\\x00-\\x1f\"'\\\\#\\[\\]=\n]*", 0..20),
            note in "\\PC*|[\\x00-\\x1f\"'\\\\#\\[\\]=\n]*",
        ) {
            let mut table = Table::new();
            set(&mut table, "a", array(&items), None);
            set(&mut table, "b", string(items.first().map_or("", String::as_str)), Some(&note));
            set(&mut table, "c", array(&items), Some(&note));
            let mut commented: Array = items.iter().map(String::as_str).collect();
            let notes: Vec<Option<String>> = items.iter().map(|_| Some(note.clone())).collect();
            one_per_line(&mut commented, &notes);
            set(&mut table, "d", Value::Array(commented), None);
            let text = render(table);
            let read: toml::Table = text.parse().map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
            proptest::prop_assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "b", "c", "d"]);
            let strings = |k: &str| -> Vec<String> {
                read[k].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
            };
            for k in ["a", "c", "d"] {
                proptest::prop_assert_eq!(strings(k), items.clone());
            }
            proptest::prop_assert_eq!(read["b"].as_str(), Some(items.first().map_or("", String::as_str)));
        }
    }

    #[test]
    fn long_arrays_break_into_lines() {
        assert_eq!(array(&["a".into(), "b".into()]).to_string(), "[\"a\", \"b\"]");
        let long: Vec<String> = (0..12).map(|i| format!("--option-{i}")).collect();
        let text = array(&long).to_string();
        assert!(text.starts_with("[\n    \"--option-0\",\n") && text.ends_with(",\n]"), "{text}");
    }
}
