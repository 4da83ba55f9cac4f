//! Compose variable interpolation and the project's `.env` file, as the Compose Specification
//! describes them (compose-spec "Interpolation" and "Environment variables in Compose").
//!
//! compose_spec does not interpolate, so this runs on the YAML tree first: every string *value*
//! (never a key) has `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//! `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` replaced and `$$` turned into `$`; defaults nest
//! (`${A:-${B}}`). Values that Compose types after interpolation (`replicas: ${N}`) are then cast,
//! as Compose does, so the typed parser sees a number or a boolean.

use serde_yaml::Value;

/// Where variables come from: the process environment over the `.env` file.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// How deeply `${VAR:-…}` may nest. Compose files nest two or three levels; the limit keeps a
/// hostile file from exhausting the stack (each level is a recursion) or the time (each level
/// scans the rest of the text for its closing brace).
pub const MAX_NESTING: usize = 32;

/// Interpolates one string. Variables that are unset and have no default become empty, as in
/// Compose; their names are appended to `unset` once each (the caller reports them).
pub fn interpolate(input: &str, lookup: Lookup<'_>, unset: &mut Vec<String>) -> Result<String, String> {
    let first = unset.len();
    let out = interpolate_at(input, input, 0, lookup, unset)?;
    dedup_from(unset, first);
    Ok(out)
}

/// Removes repeated names from `names[first..]` (and those already in `names[..first]`), keeping
/// the first of each: linear, for files that name thousands of variables.
fn dedup_from(names: &mut Vec<String>, first: usize) {
    let mut seen: std::collections::HashSet<String> = names[..first].iter().cloned().collect();
    let mut index = 0;
    names.retain(|n| {
        index += 1;
        index <= first || seen.insert(n.clone())
    });
}

/// The start of a long text, for an error message.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{:?}…", &text[..i]),
        None => format!("{text:?}"),
    }
}

/// [`interpolate`] of `input`, a part of `whole` nested `depth` defaults deep.
fn interpolate_at(
    input: &str,
    whole: &str,
    depth: usize,
    lookup: Lookup<'_>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "invalid interpolation in {}: `${{…}}` nested more than {MAX_NESTING} levels deep",
            excerpt(whole)
        ));
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let end = closing_brace(after)
                    .ok_or_else(|| format!("invalid interpolation in {}: `${{` is never closed", excerpt(whole)))?;
                out.push_str(&braced(&after[1..end], whole, depth, lookup, unset)?);
                rest = &after[end + 1..];
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let len = after.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(after.len());
                let name = &after[..len];
                out.push_str(&value_of(name, lookup, unset));
                rest = &after[len..];
            }
            _ => {
                return Err(format!("invalid interpolation in {}: write `$$` for a literal `$`", excerpt(whole)));
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing the `{` at `s[0]`; `${` inside nests.
fn closing_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'{' if i == 0 => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A variable's value; an unset one is empty and noted (repeats are removed by the caller).
fn value_of(name: &str, lookup: Lookup<'_>, unset: &mut Vec<String>) -> String {
    lookup(name).unwrap_or_else(|| {
        unset.push(name.to_string());
        String::new()
    })
}

/// The inside of `${…}`: a name, then nothing or an operator and a word.
fn braced(
    inner: &str,
    whole: &str,
    depth: usize,
    lookup: Lookup<'_>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let len = inner.find(|c: char| !(c == '_' || c.is_ascii_alphanumeric())).unwrap_or(inner.len());
    let name = &inner[..len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "invalid interpolation in {}: `${{{}}}` does not start with a variable name",
            excerpt(whole),
            excerpt(inner).trim_matches('"')
        ));
    }
    let op = &inner[len..];
    if op.is_empty() {
        return Ok(value_of(name, lookup, unset));
    }
    let value = lookup(name);
    let set_non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (colon, op) = match op.strip_prefix(':') {
        Some(op) => (true, op),
        None => (false, op),
    };
    // With a colon, an empty value counts as unset.
    let present = if colon { set_non_empty } else { value.is_some() };
    let word = &op[op.chars().next().map_or(0, char::len_utf8)..];
    match op.chars().next() {
        Some('-') if present => Ok(value.unwrap_or_default()),
        Some('-') => interpolate_at(word, whole, depth + 1, lookup, unset),
        Some('+') if present => interpolate_at(word, whole, depth + 1, lookup, unset),
        Some('+') => Ok(String::new()),
        Some('?') if present => Ok(value.unwrap_or_default()),
        Some('?') => {
            let message = interpolate_at(word, whole, depth + 1, lookup, unset)?;
            let why = if message.is_empty() { "it is required".to_string() } else { message };
            Err(format!("variable {name} is {}: {why}", if value.is_some() { "empty" } else { "not set" }))
        }
        _ => Err(format!(
            "invalid interpolation in {}: unknown operator in `${{{}}}`",
            excerpt(whole),
            excerpt(inner).trim_matches('"')
        )),
    }
}

/// Parses a project `.env` file as Compose does. One `KEY=VALUE` or `KEY: VALUE` per line (an
/// `export ` prefix is allowed); blank lines and `#` comments are skipped; a name alone takes its value from `outer`
/// (skipped when unset there). Names are letters, digits, `_`, `.`, `-`, `[` and `]` (only the
/// first three can be interpolated). A value in single quotes is literal; one in double quotes
/// has `\n`, `\t`, `\r`, `\\`, `\"` and `\$` unescaped and is interpolated; either may go on over
/// the next lines up to its closing quote. An unquoted value ends at ` #` (a comment), is trimmed
/// and interpolated. Interpolation sees `outer` (the process environment), then the variables
/// defined above it in the file.
pub fn parse_dotenv(text: &str, outer: Lookup<'_>) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    // The latest value of each name (a file may set thousands): lookups stay constant-time.
    let mut latest: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let at = |why: &str| format!("{}: {why}", n + 1);
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        // `KEY=VALUE`, or `KEY: VALUE` (compose-go takes that too): the key ends at the first of them.
        let Some((key, raw)) = line.find(['=', ':']).map(|at| (&line[..at], &line[at + 1..])) else {
            let name = line.trim_end();
            if !is_dotenv_name(name) {
                return Err(at("expected KEY=VALUE"));
            }
            if let Some(value) = outer(name) {
                latest.insert(name.to_string(), vars.len());
                vars.push((name.to_string(), value));
            }
            continue;
        };
        let key = key.trim();
        if !is_dotenv_name(key) {
            return Err(at(&format!("{key:?} is not a variable name")));
        }
        let mut raw = std::borrow::Cow::Borrowed(raw.trim_start());
        // The environment wins over the file, here as in the Compose file (compose-go's order).
        let lookup =
            |name: &str| -> Option<String> { outer(name).or_else(|| latest.get(name).map(|&i| vars[i].1.clone())) };
        let mut unset = Vec::new();
        let value = if raw.starts_with('\'') {
            let end = loop {
                match raw[1..].find('\'') {
                    Some(end) => break end + 1,
                    None => more_of(&mut raw, &mut lines).ok_or_else(|| at("the single quote is never closed"))?,
                }
            };
            trailing_comment_only(&raw[end + 1..]).map_err(|w| at(&w))?;
            raw[1..end].to_string()
        } else if raw.starts_with('"') {
            let (unescaped, after) = loop {
                match double_quoted(&raw[1..]) {
                    Some((unescaped, after)) => break (unescaped, after.to_string()),
                    None => more_of(&mut raw, &mut lines).ok_or_else(|| at("the double quote is never closed"))?,
                }
            };
            trailing_comment_only(&after).map_err(|w| at(&w))?;
            interpolate(&unescaped, &lookup, &mut unset).map_err(|e| at(&e))?
        } else {
            // Only ` #` starts a comment (compose-go): a tab before `#` keeps it in the value.
            let cut = raw.find(" #").unwrap_or(raw.len());
            interpolate(raw[..cut].trim_end(), &lookup, &mut unset).map_err(|e| at(&e))?
        };
        latest.insert(key.to_string(), vars.len());
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// A name Compose accepts in a `.env` file (compose-go's dotenv): letters, digits, `_`, `.`, `-`,
/// `[` and `]`.
fn is_dotenv_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || "_.-[]".contains(c))
}

/// A quoted value not closed on its line goes on over the next: appends the next line, or `None`
/// when the file ends first.
fn more_of<'t>(raw: &mut std::borrow::Cow<'t, str>, lines: &mut impl Iterator<Item = (usize, &'t str)>) -> Option<()> {
    let (_, next) = lines.next()?;
    let value = raw.to_mut();
    value.push('\n');
    value.push_str(next);
    Some(())
}

fn trailing_comment_only(after: &str) -> Result<(), String> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {after:?} after the quoted value"))
    }
}

/// The body of a double-quoted value up to its closing quote, unescaped (`\$` stays `$$`, so
/// interpolation keeps it literal); and what follows the quote.
fn double_quoted(body: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &body[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '$' => out.push_str("$$"),
                other @ ('\\' | '"') => out.push(other),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    None
}

/// What a value becomes when Compose types it after interpolation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cast {
    Int,
    Float,
    Bool,
    /// A file mode: YAML 1.1 (which Compose reads) takes `0400` as octal, serde_yaml as a
    /// string; applies to literal values too.
    Octal,
}

/// Paths (from the file's root; `*` is any key, `[]` any list item) whose interpolated value
/// Compose casts, for the keys kapell reads or reports.
const CASTS: &[(&[&str], Cast)] = &[
    (&["services", "*", "deploy", "replicas"], Cast::Int),
    (&["services", "*", "scale"], Cast::Int),
    (&["services", "*", "healthcheck", "retries"], Cast::Int),
    (&["services", "*", "healthcheck", "disable"], Cast::Bool),
    (&["services", "*", "ports", "[]", "target"], Cast::Int),
    (&["services", "*", "ports", "[]", "published"], Cast::Int),
    (&["services", "*", "ports", "[]"], Cast::Int),
    (&["services", "*", "deploy", "resources", "limits", "pids"], Cast::Int),
    (&["services", "*", "deploy", "resources", "limits", "cpus"], Cast::Float),
    (&["services", "*", "deploy", "resources", "reservations", "cpus"], Cast::Float),
    (&["services", "*", "deploy", "restart_policy", "max_attempts"], Cast::Int),
    (&["services", "*", "pids_limit"], Cast::Int),
    (&["services", "*", "cpus"], Cast::Float),
    (&["services", "*", "cpu_count"], Cast::Int),
    (&["services", "*", "cpu_shares"], Cast::Int),
    (&["services", "*", "depends_on", "*", "required"], Cast::Bool),
    (&["services", "*", "depends_on", "*", "restart"], Cast::Bool),
    (&["services", "*", "env_file", "[]", "required"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "read_only"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "bind", "create_host_path"], Cast::Bool),
    (&["services", "*", "volumes", "[]", "volume", "nocopy"], Cast::Bool),
    (&["services", "*", "read_only"], Cast::Bool),
    (&["services", "*", "privileged"], Cast::Bool),
    (&["services", "*", "init"], Cast::Bool),
    (&["services", "*", "tty"], Cast::Bool),
    (&["services", "*", "stdin_open"], Cast::Bool),
    (&["services", "*", "secrets", "[]", "mode"], Cast::Octal),
    (&["services", "*", "secrets", "[]", "uid"], Cast::Int),
    (&["services", "*", "secrets", "[]", "gid"], Cast::Int),
    (&["networks", "*", "external"], Cast::Bool),
    (&["volumes", "*", "external"], Cast::Bool),
    (&["secrets", "*", "external"], Cast::Bool),
    (&["configs", "*", "external"], Cast::Bool),
];

fn cast_for(path: &[String]) -> Option<Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let matches =
            pattern.len() == path.len() && pattern.iter().zip(path).all(|(p, k)| *p == "*" && k != "[]" || p == k);
        matches.then_some(*cast)
    })
}

fn cast(text: &str, cast: Cast) -> Option<Value> {
    match cast {
        Cast::Int => text.trim().parse::<i64>().ok().map(Value::from),
        Cast::Float => text.trim().parse::<f64>().ok().map(Value::from),
        Cast::Octal => {
            let t = text.trim();
            let digits = t.strip_prefix("0o").or_else(|| t.strip_prefix('0').filter(|d| !d.is_empty()));
            match digits {
                Some(d) => i64::from_str_radix(d, 8).ok().map(Value::from),
                None => t.parse::<i64>().ok().map(Value::from),
            }
        }
        Cast::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "n" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

/// Every use of an unset variable: its name and where (`services.web.volumes[]`).
pub type UnsetUses = Vec<(String, String)>;

/// Interpolates every string value of a Compose tree in place; an error names its path. Each use
/// of an unset variable is appended to `unset` with its place (a variable used twice is there
/// twice, once per place).
pub fn interpolate_tree(value: &mut Value, lookup: Lookup<'_>, unset: &mut UnsetUses) -> Result<(), String> {
    walk(value, &mut Vec::new(), lookup, unset)
}

fn walk(value: &mut Value, path: &mut Vec<String>, lookup: Lookup<'_>, unset: &mut UnsetUses) -> Result<(), String> {
    match value {
        Value::String(s) if !s.contains('$') && cast_for(path) == Some(Cast::Octal) => {
            if let Some(mode) = cast(s, Cast::Octal) {
                *value = mode;
            }
        }
        Value::String(s) if s.contains('$') => {
            let mut names = Vec::new();
            let text = interpolate_at(s, s, 0, lookup, &mut names).map_err(|e| format!("{}: {e}", dotted(path)))?;
            dedup_from(&mut names, 0);
            let place = dotted(path);
            unset.extend(names.into_iter().map(|n| (n, place.clone())));
            *value = match cast_for(path).and_then(|c| cast(&text, c)) {
                Some(typed) => typed,
                None => Value::String(text),
            };
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(key.as_str().map_or_else(|| format!("{key:?}"), str::to_string));
                walk(item, path, lookup, unset)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for item in items {
                path.push("[]".to_string());
                walk(item, path, lookup, unset)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, unset)?,
        _ => {}
    }
    Ok(())
}

fn dotted(path: &[String]) -> String {
    path.join(".").replace(".[]", "[]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn run(input: &str) -> Result<String, String> {
        interpolate(input, &env, &mut Vec::new())
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(run("$SET/${SET}x").as_deref(), Ok("value/valuex"));
        assert_eq!(run("a$SET-b").as_deref(), Ok("avalue-b"));
        assert_eq!(run("no dollars").as_deref(), Ok("no dollars"));
    }

    #[test]
    fn unset_variables_become_empty_and_are_reported() {
        let mut unset = Vec::new();
        assert_eq!(interpolate("[$NOPE][${NOPE}][${OTHER}]", &env, &mut unset).as_deref(), Ok("[][][]"));
        assert_eq!(unset, ["NOPE", "OTHER"]);
    }

    #[test]
    fn defaults_with_and_without_colon() {
        assert_eq!(run("${SET:-d}").as_deref(), Ok("value"));
        assert_eq!(run("${NOPE:-d}").as_deref(), Ok("d"));
        assert_eq!(run("${EMPTY:-d}").as_deref(), Ok("d"));
        assert_eq!(run("${NOPE-d}").as_deref(), Ok("d"));
        assert_eq!(run("${EMPTY-d}").as_deref(), Ok(""));
        assert_eq!(run("${NOPE:-}").as_deref(), Ok(""));
        assert_eq!(run("${NOPE:-a b:c}").as_deref(), Ok("a b:c"));
    }

    #[test]
    fn nested_defaults() {
        assert_eq!(run("${NOPE:-${SET}}").as_deref(), Ok("value"));
        assert_eq!(run("${NOPE:-${ALSO:-${PORT}}}/x").as_deref(), Ok("8080/x"));
        assert_eq!(run("${NOPE:-$$literal}").as_deref(), Ok("$literal"));
    }

    #[test]
    fn required_variables() {
        assert_eq!(run("${SET:?needed}").as_deref(), Ok("value"));
        let e = run("${NOPE:?set NOPE to the database URL}").expect_err("unset");
        assert_eq!(e, "variable NOPE is not set: set NOPE to the database URL");
        assert_eq!(run("${EMPTY:?x}").expect_err("empty"), "variable EMPTY is empty: x");
        assert_eq!(run("${EMPTY?x}").as_deref(), Ok(""));
        assert_eq!(run("${NOPE?}").expect_err("unset"), "variable NOPE is not set: it is required");
    }

    #[test]
    fn alternatives() {
        assert_eq!(run("${SET:+on}").as_deref(), Ok("on"));
        assert_eq!(run("${EMPTY:+on}").as_deref(), Ok(""));
        assert_eq!(run("${EMPTY+on}").as_deref(), Ok("on"));
        assert_eq!(run("${NOPE+on}").as_deref(), Ok(""));
    }

    #[test]
    fn escaped_dollars() {
        assert_eq!(run("$$SET $${SET} a$$").as_deref(), Ok("$SET ${SET} a$"));
    }

    /// 25,000 nested defaults overflowed the stack (an abort, not an error); now the nesting has
    /// a limit, in a value and in a `.env` line (read even when no variable of it is used).
    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nested = |n: usize| format!("{}x{}", "${A:-".repeat(n), "}".repeat(n));
        assert_eq!(run(&nested(MAX_NESTING)).as_deref(), Ok("x"));
        let e = run(&nested(25_000)).expect_err("too deep");
        assert!(e.ends_with("`${…}` nested more than 32 levels deep"), "{e}");
        assert!(e.len() < 200, "the error quotes only the start of the value: {e}");
        let e = parse_dotenv(&format!("UNUSED={}\n", nested(25_000)), &env).expect_err("too deep");
        assert!(e.starts_with("1: invalid interpolation in \"${A:-${A:-"), "{e}");
    }

    /// Each unset variable is reported once, however often it is used (and in linear time).
    #[test]
    fn many_unset_variables_are_each_reported_once() {
        let text: String = (0..50_000).map(|i| format!("${{V{i}}}${{V{i}}}")).collect();
        let mut unset = Vec::new();
        assert_eq!(interpolate(&text, &env, &mut unset).as_deref(), Ok(""));
        assert_eq!(unset.len(), 50_000);
        assert_eq!(unset[49_999], "V49999");
    }

    #[test]
    fn invalid_templates_are_errors() {
        for bad in ["$", "a $ b", "$1", "${", "${SET", "${}", "${1A}", "${SET:x}", "${SET!}"] {
            assert!(run(bad).is_err(), "{bad:?} should be an error");
        }
    }

    #[test]
    fn dotenv_forms() {
        let text = "# comment\n\nA=plain value # comment\nexport B = 'single $A # kept'\nC=\"double ${A}\\n\\$x\"\nD=${B:-x}$A\nE=\nF=${PORT}\n";
        let vars = parse_dotenv(text, &env).expect("parses");
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("plain value"));
        assert_eq!(get("B"), Some("single $A # kept"));
        assert_eq!(get("C"), Some("double plain value\n$x"));
        assert_eq!(get("D"), Some("single $A # keptplain value"));
        assert_eq!(get("E"), Some(""));
        assert_eq!(get("F"), Some("8080"));
    }

    /// What Compose's own `.env` reader takes beyond one `KEY=VALUE` a line: quoted values over
    /// several lines, names with dots and dashes, a name alone (its value from the environment).
    #[test]
    fn dotenv_values_over_lines_and_compose_names() {
        let text = "M=\"one\n  two ${PORT}\"  # c\nS='a\n\nb $X'\nspring.profiles.active=prod\nx-y[0]=1\nPORT\nNOPE\nAFTER=${M}\n";
        let vars = parse_dotenv(text, &env).expect("parses");
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("M"), Some("one\n  two 8080"));
        assert_eq!(get("S"), Some("a\n\nb $X"));
        assert_eq!(get("spring.profiles.active"), Some("prod"));
        assert_eq!(get("x-y[0]"), Some("1"));
        assert_eq!(get("PORT"), Some("8080"), "a name alone takes the environment's value");
        assert_eq!(get("NOPE"), None, "a name alone that the environment does not set is skipped");
        assert_eq!(get("AFTER"), Some("one\n  two 8080"));
        // The environment wins over the file; `KEY: VALUE`; only ` #` starts a comment.
        let vars = parse_dotenv("PORT=9\nY=${PORT}\nA: b c\nC=y\t#tab\nU=http://x:1\n", &env).expect("parses");
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Y"), Some("8080"));
        assert_eq!(get("A"), Some("b c"));
        assert_eq!(get("C"), Some("y\t#tab"));
        assert_eq!(get("U"), Some("http://x:1"));
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        assert_eq!(parse_dotenv("A=1\nnot a pair\n", &env).expect_err("bad"), "2: expected KEY=VALUE");
        assert!(parse_dotenv("A='open\n", &env).expect_err("bad").starts_with("1: the single quote"));
        assert!(parse_dotenv("A$=x\n", &env).expect_err("bad").contains("\"A$\" is not a variable name"));
        assert!(parse_dotenv("A=\"open\nstill open\n", &env).expect_err("bad").starts_with("1: the double quote"));
    }

    #[test]
    fn tree_values_are_interpolated_and_cast_keys_are_not() {
        let mut tree: Value = serde_yaml::from_str(
            "services:\n  $SET:\n    image: img:${SET}\n    deploy: { replicas: '${N:-3}' }\n    ports: ['${PORT}:80', '${PORT}']\n    read_only: ${YES:-true}\n    environment: { A: '${PORT}', B: '${MISSING}' }\n",
        )
        .expect("yaml");
        let mut unset = Vec::new();
        interpolate_tree(&mut tree, &env, &mut unset).expect("ok");
        assert_eq!(unset, [("MISSING".to_string(), "services.$SET.environment.B".to_string())]);
        let unset: Vec<&str> = unset.iter().map(|(name, _)| name.as_str()).collect();
        let service = &tree["services"]["$SET"];
        assert_eq!(service["image"], Value::from("img:value"));
        assert_eq!(service["deploy"]["replicas"], Value::from(3));
        assert_eq!(service["ports"][0], Value::from("8080:80"));
        assert_eq!(service["ports"][1], Value::from(8080));
        assert_eq!(service["read_only"], Value::Bool(true));
        let mut modes: Value = serde_yaml::from_str(
            "services:\n  a:\n    secrets: [{ source: s, mode: '0440' }, { source: t, mode: 0o400 }]\n",
        )
        .expect("yaml");
        interpolate_tree(&mut modes, &env, &mut Vec::new()).expect("ok");
        assert_eq!(modes["services"]["a"]["secrets"][0]["mode"], Value::from(0o440));
        assert_eq!(modes["services"]["a"]["secrets"][1]["mode"], Value::from(0o400));
        // Environment values stay strings.
        assert_eq!(service["environment"]["A"], Value::from("8080"));
        // Defaults are not reported; a variable without one is.
        assert_eq!(unset, ["MISSING"]);
    }

    proptest::proptest! {
        /// Text without `$` is left alone; any text with each `$` doubled comes back unchanged.
        #[test]
        fn escaped_text_comes_back_unchanged(text in "\\PC*") {
            let escaped = text.replace('$', "$$");
            proptest::prop_assert_eq!(run(&escaped), Ok(text.clone()));
            if !text.contains('$') {
                proptest::prop_assert_eq!(run(&text), Ok(text));
            }
        }

        /// A default is used exactly when the variable is unset (or empty, with `:`).
        #[test]
        fn defaults_are_literal_text(default in "[a-zA-Z0-9 ./:@_-]*") {
            proptest::prop_assert_eq!(run(&format!("${{NOPE:-{default}}}")), Ok(default.clone()));
            proptest::prop_assert_eq!(run(&format!("${{EMPTY:-{default}}}")), Ok(default.clone()));
            proptest::prop_assert_eq!(run(&format!("${{EMPTY-{default}}}")), Ok(String::new()));
            proptest::prop_assert_eq!(run(&format!("${{SET:-{default}}}")), Ok("value".to_string()));
        }
    }

    #[test]
    fn tree_errors_name_the_path() {
        let mut tree: Value =
            serde_yaml::from_str("services:\n  web:\n    command: [a, '${X:?give X}']\n").expect("yaml");
        let e = interpolate_tree(&mut tree, &env, &mut Vec::new()).expect_err("required");
        assert_eq!(e, "services.web.command[]: variable X is not set: give X");
    }
}
