//! `env_files`: environment files for a container, read by the supervisor at each start.
//!
//! The format is the common subset of systemd's `EnvironmentFile=` and Compose's `env_file`, so a
//! file written for either means the same here: one `KEY=VALUE` per line; blank lines and lines
//! starting with `#` or `;` are ignored; blanks around the key and the value are trimmed; a value
//! wholly inside double quotes has `\"` and `\\` unescaped, one inside single quotes is taken
//! literally; any other value is taken verbatim. Values may be secrets, so errors never quote them.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Parses the text of an environment file into `(key, value)` pairs, in order.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("line {}: the name before '=' is not a variable name", n + 1));
        }
        out.push((key.to_string(), unquote(value.trim())));
    }
    Ok(out)
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let mut out = String::with_capacity(value.len());
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => out.push(e),
                    Some(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        return out;
    }
    value.to_string()
}

/// Where `text` leaves the common subset, so that Compose's `env_file` reader (which strips
/// `export`, cuts ` #` comments, expands `${VAR}` and `\n`, and takes dotted names) would give
/// other values than this one: the first such line and what is there, never the value itself.
pub fn beyond_the_common_subset(text: &str) -> Option<String> {
    if let Err(e) = parse(text) {
        return Some(e);
    }
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let value = line.split_once('=').map_or("", |(_, v)| v.trim());
        let single = value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'');
        let double = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
        let what = if !single && !double && value.contains(" #") {
            "a ` #` comment after the value (Compose cuts it off, kapell keeps it)"
        } else if !single && value.contains('$') {
            "a `$` (Compose expands variables, kapell keeps it as it is)"
        } else if double && value.replace("\\\\", "").replace("\\\"", "").contains('\\') {
            "a backslash escape (Compose expands `\\n` and others, kapell keeps them)"
        } else {
            continue;
        };
        return Some(format!("line {}: {what}", n + 1));
    }
    None
}

/// The largest environment file read: a file of variables, not a device or a log.
const MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Reads and parses one environment file; errors name the file.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    parse(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// The text of an environment file: a regular file (not a FIFO that never ends, nor
/// `/dev/zero`) of at most 8 MiB, in UTF-8; errors name the file.
pub fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    // Non-blocking, so opening a FIFO with no writer does not wait for one.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("{} is larger than 8 MiB", path.display()));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device, a FIFO or a directory is refused at once, not read for ever.
    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        for path in [Path::new("/dev/zero"), &fifo, dir.path()] {
            assert!(read_text(path).expect_err("refused").contains("is not a regular file"), "{}", path.display());
        }
        let big = dir.path().join("big.env");
        std::fs::write(&big, vec![b'#'; 8 * 1024 * 1024 + 1]).expect("write");
        assert!(read_text(&big).expect_err("refused").contains("larger than 8 MiB"));
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn key_value_lines() {
        let text = "# comment\n; also\n\nA=1\n  B = two words  \nC=\nD=x=y\nE=\"quoted \\\"q\\\" \\\\ \\n\"\nF='single $X \\'\nG=\"unbalanced\n";
        assert_eq!(
            parse(text),
            Ok(pairs(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", ""),
                ("D", "x=y"),
                ("E", "quoted \"q\" \\ \\n"),
                ("F", "single $X \\"),
                ("G", "\"unbalanced"),
            ]))
        );
    }

    #[test]
    fn errors_name_the_line_not_the_value() {
        assert_eq!(parse("A=1\nsecret-value\n"), Err("line 2: expected KEY=VALUE".into()));
        let err = parse("1A=hunter2").expect_err("bad key");
        assert!(err.starts_with("line 1:") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn what_compose_would_read_otherwise_is_named_by_line() {
        let same = "# c\nA=1\nB=\"quoted \\\" \\\\ \"\nC='$literal # too'\nD=plain#hash\n";
        assert_eq!(beyond_the_common_subset(same), None);
        for (text, line, what) in [
            ("A=1\nexport B=2\n", "line 2:", "variable name"),
            ("spring.profiles.active=prod\n", "line 1:", "variable name"),
            ("MODE=prod # the mode\n", "line 1:", "comment"),
            ("URL=http://${HOST}:5432\n", "line 1:", "`$`"),
            ("G=\"hello\\nworld\"\n", "line 1:", "backslash"),
        ] {
            let said = beyond_the_common_subset(text).unwrap_or_default();
            assert!(said.starts_with(line) && said.contains(what), "{text:?}: {said}");
        }
    }

    #[test]
    fn read_names_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.env");
        std::fs::write(&path, "X=1\nbroken\n")?;
        let err = read(&path).expect_err("broken");
        assert!(err.contains("app.env: line 2"), "{err}");
        assert!(read(&dir.path().join("missing.env")).is_err());
        Ok(())
    }
}
