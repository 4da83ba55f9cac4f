//! The stack schema (kapell.toml(5)): a stack file's spanned TOML tree becomes a [`Stack`], or every
//! problem found in it.

use super::document::{self, Spanned, Table, Value};
use super::pieces;
use super::reader::{At, Ctx, Shift};
use super::service::read_service;
use super::syntax;
use crate::diagnostics::{Diagnostic, Source};
use crate::model::{DepTarget, Secret, SecretSource, Service, Stack};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

const STACK_KEYS: &[&str] = &["description", "enable", "services", "secrets"];

/// The result of reading one stack file: the stack when it has no errors, and every problem
/// (errors and warnings) found in it.
#[derive(Debug)]
pub struct Parsed {
    pub name: String,
    pub stack: Option<Stack>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and checks one stack file. The stack name is the file stem.
///
/// Checks everything that can be known from this file alone; dependencies on other stacks,
/// cycles and unit-name collisions are host-wide and live in [`crate::validate`].
pub fn parse_stack(path: &Path, text: &str) -> Parsed {
    parse_stack_text(path, text.to_string())
}

/// [`parse_stack`] of text the caller has no more use for (a file just read): the diagnostics'
/// source keeps it, so a large stack file is not copied once more.
pub fn parse_stack_text(path: &Path, text: String) -> Parsed {
    let name = crate::config::stack_name(path);
    match parse(path, text) {
        Ok((stack, diagnostics)) => Parsed { name, stack: Some(stack), diagnostics },
        Err(diagnostics) => Parsed { name, stack: None, diagnostics },
    }
}

/// A checked stack with its warnings, or every problem of the file.
type Checked = Result<(Stack, Vec<Diagnostic>), Vec<Diagnostic>>;

fn parse(path: &Path, text: String) -> Checked {
    let source = Source::new(path, text);
    if let Some(parsed) = pieces::cut(&source.text).and_then(|cut| parse_in_pieces(path, &source, &cut)) {
        return parsed;
    }
    parse_whole(path, &source)
}

/// [`parse`] of the whole file at once.
fn parse_whole(path: &Path, source: &Arc<Source>) -> Checked {
    let mut ctx = Ctx::new(Arc::clone(source));
    let (root, syntax_errors) = document::parse(&source.text);
    for e in &syntax_errors {
        let span = e.span.clone().unwrap_or(0..0);
        let message = match e.message.trim() {
            "duplicate key" => duplicate_key(&source.text, span.clone()),
            other => other.to_string(),
        };
        ctx.error(span, message);
    }
    if !ctx.diags.is_empty() {
        return Err(ctx.diags);
    }
    let root = &root;
    read_stack(path, ctx, root, |ctx, declared_secrets| match root.get("services") {
        None => Some(Services::Missing),
        Some(value) => Some(match ctx.table(value, "services") {
            None => Services::NotATable,
            Some(table) => {
                // Services are read independently (each with its own diagnostics, merged in
                // file order), so a stack of many services uses every core.
                let entries: Vec<_> = table.iter().collect();
                let whole = Ctx::new(Arc::clone(&ctx.source));
                let read =
                    crate::parallel::map(&entries, |(key, value)| read_one(&whole, key, value, declared_secrets));
                let declared = table.keys().map(|k| k.get_ref().to_string()).collect();
                Services::Read { declared, read: vec![read] }
            }
        }),
    })
    .expect("a whole file is always read")
}

/// [`parse`] of a large file in pieces ([`pieces`]), or `None` when the cut does not mean what
/// the whole file means (then the file is parsed whole, with the whole file's error messages).
fn parse_in_pieces(path: &Path, source: &Arc<Source>, cut: &pieces::Cut<'_>) -> Option<Checked> {
    let text = &source.text;
    let complete = |range: &std::ops::Range<usize>| document::parse(&text[range.clone()]).1.is_empty();
    if !complete(&cut.head) || !complete(&cut.tail) {
        return None;
    }
    // The stack's own keys: the text before the services joined with the text after them.
    let own_text = format!("{}{}", &text[cut.head.clone()], &text[cut.tail.clone()]);
    let (root, errors) = document::parse(&own_text);
    if !errors.is_empty() || root.get("services").is_some() {
        return None;
    }
    let shift = Shift { at: cut.head.end, by: cut.tail.start - cut.head.end };
    let ctx = Ctx::shifted(Arc::clone(source), shift);
    read_stack(path, ctx, &root, |ctx, declared_secrets| {
        let source = Arc::clone(&ctx.source);
        let read = crate::parallel::map(&cut.pieces, |piece| {
            let (tree, errors) = document::parse(&text[piece.range.clone()]);
            let tree = &tree;
            let table = match (tree.len(), tree.get("services").map(|v| v.get_ref())) {
                (1, Some(Value::Table(table))) if errors.is_empty() => table,
                _ => return None,
            };
            let defines_its_headers = table.len() == piece.names.len()
                && table.keys().zip(&piece.names).all(|(k, name)| k.get_ref().as_ref() == *name);
            if !defines_its_headers {
                return None;
            }
            let own = Ctx::shifted(Arc::clone(&source), Shift { at: 0, by: piece.range.start });
            Some(table.iter().map(|(key, value)| read_one(&own, key, value, declared_secrets)).collect::<Vec<_>>())
        });
        let read = read.into_iter().collect::<Option<Vec<_>>>()?;
        let declared: Vec<String> = cut.pieces.iter().flat_map(|p| p.names.iter().map(|n| n.to_string())).collect();
        let unique: HashSet<&str> = declared.iter().map(String::as_str).collect();
        (unique.len() == declared.len()).then_some(Services::Read { declared, read })
    })
}

/// The services of a file as [`read_stack`] gets them.
enum Services {
    Missing,
    NotATable,
    /// Every service declared, with errors or not (a service with an error still exists for the
    /// references of the others: its own error is the one to report), and each one read, with
    /// its own diagnostics, in file order: piece by piece, as a file parsed in pieces gives them
    /// (a file parsed whole is one piece), so that no second copy of them all is ever made.
    Read {
        declared: Vec<String>,
        read: Vec<Vec<(Option<Service>, Vec<Diagnostic>)>>,
    },
}

/// Reads one `[services.NAME]` table with a context of its own (`ctx` only says where the
/// tree's text is in the file).
fn read_one(
    ctx: &Ctx,
    key: &super::document::Key<'_>,
    value: &Spanned<Value<'_>>,
    declared_secrets: &[String],
) -> (Option<Service>, Vec<Diagnostic>) {
    let mut own = Ctx::shifted(Arc::clone(&ctx.source), ctx.shift());
    let name = At { value: key.get_ref().to_string(), span: own.span(key) };
    let service = read_service(&mut own, &name, value, declared_secrets);
    (service, own.diags)
}

/// The stack from its own keys in `root` and its services, which `read_services` reads once
/// the declared secrets are known; `None` when `read_services` says the file must be read another way.
fn read_stack(
    path: &Path,
    mut ctx: Ctx,
    root: &Table<'_>,
    read_services: impl FnOnce(&mut Ctx, &[String]) -> Option<Services>,
) -> Option<Checked> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if let Err(e) = crate::names::check_stack_name(&stem) {
        ctx.error(0..0, format!("{e} (the stack name is the file name without .toml)"));
    }
    ctx.reject_unknown_keys(root, STACK_KEYS, "the stack");

    let description = root.get("description").and_then(|v| ctx.string(v, "description")).and_then(|d| {
        if d.value.chars().any(char::is_control) {
            ctx.error(d.span, "`description` must be a single line without control characters");
            None
        } else {
            Some(d.value)
        }
    });
    let enable = root.get("enable").and_then(|v| ctx.boolean(v, "enable")).unwrap_or(true);
    // Services may only name declared secrets; a declared but broken one is reported once, where it is declared.
    let declared_secrets: Vec<String> = root
        .get("secrets")
        .and_then(|v| v.get_ref().as_table())
        .map(|t| t.keys().map(|k| k.get_ref().to_string()).collect())
        .unwrap_or_default();
    let secrets = root
        .get("secrets")
        .and_then(|v| ctx.table(v, "secrets"))
        .map(|t| read_secrets(&mut ctx, t))
        .unwrap_or_default();

    let mut services = Vec::new();
    let mut declared_services = Vec::new();
    match read_services(&mut ctx, &declared_secrets)? {
        Services::Read { declared, read } => {
            // Each piece is freed as soon as its services are moved out.
            services.reserve_exact(declared.len());
            for (service, diags) in read.into_iter().flatten() {
                ctx.diags.extend(diags);
                services.extend(service);
            }
            if declared.is_empty() {
                ctx.error(ctx.key_span(root, "services").unwrap_or(0..0), "the stack has no services");
            }
            declared_services = declared;
        }
        Services::NotATable => {}
        Services::Missing => ctx.error(0..0, "the stack has no services: add a [services.<name>] table"),
    }

    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let stack = Stack::new(stem, Arc::clone(&ctx.source), path, description, enable, services, secrets);
    check_references(&mut ctx, &stack, &declared_services);
    Some(if ctx.has_errors() { Err(ctx.diags) } else { Ok((stack, ctx.diags)) })
}

/// "duplicate key `image` (first set on line 4)": the parser says only "duplicate key" and
/// points at the second one. The key is the text there; the first one is the earlier line of the
/// same table that sets the same key (or, for a table written twice, the same header).
fn duplicate_key(text: &str, span: std::ops::Range<usize>) -> String {
    let Some(name) = text.get(span.clone()).map(|k| k.trim().trim_matches(['"', '\''])) else {
        return "duplicate key".to_string();
    };
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[span.start..].find('\n').map_or(text.len(), |i| span.start + i);
    let without_comment = |l: &str| l.split('#').next().unwrap_or_default().trim().to_string();
    let line = without_comment(&text[line_start..line_end]);
    let earlier: Vec<&str> = text[..line_start].lines().collect();
    if line.starts_with('[') {
        return match earlier.iter().position(|l| without_comment(l) == line) {
            Some(i) => format!("table `{line}` is defined twice (first on line {})", i + 1),
            None => format!("duplicate key `{name}`"),
        };
    }
    let key_of = |l: &str| l.split_once('=').map(|(k, _)| k.trim().to_string());
    let key = key_of(&line);
    let table_start = earlier.iter().rposition(|l| l.trim_start().starts_with('[')).map_or(0, |h| h + 1);
    match earlier.iter().enumerate().skip(table_start).find(|(_, l)| key.is_some() && key_of(l) == key) {
        Some((i, _)) => format!("duplicate key `{name}` (first set on line {})", i + 1),
        None => format!("duplicate key `{name}`"),
    }
}

fn read_secrets(ctx: &mut Ctx, table: &Table<'_>) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if let Err(e) = syntax::check_secret_name(&name) {
            ctx.error(ctx.span(key), e);
            continue;
        }
        let context = format!("[secrets.{name}]");
        let Some(fields) = ctx.table(value, &context) else { continue };
        ctx.reject_unknown_keys(fields, &["file", "encrypted"], &context);
        let file = fields.get("file").and_then(|v| ctx.string(v, "file"));
        let encrypted = fields.get("encrypted").and_then(|v| ctx.string(v, "encrypted"));
        let source = match (file, encrypted) {
            (Some(file), None) => match syntax::check_systemd_path(&file.value) {
                Ok(()) => Some(SecretSource::File(file.value)),
                Err(e) => {
                    ctx.error(file.span, e);
                    None
                }
            },
            (None, Some(blob)) => {
                // `systemd-creds encrypt` prints base64, possibly wrapped; keep it on one line.
                let compact: String = blob.value.chars().filter(|c| !c.is_whitespace()).collect();
                if compact.is_empty() || !compact.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)) {
                    ctx.error(blob.span, "`encrypted` must be the base64 text printed by `systemd-creds encrypt`");
                    None
                } else {
                    Some(SecretSource::Encrypted(compact))
                }
            }
            (Some(_), Some(blob)) => {
                ctx.error(blob.span, format!("{context} has both `file` and `encrypted`; keep one"));
                None
            }
            (None, None) => {
                ctx.error(ctx.span(key), format!("{context} needs `file = \"/path\"` or `encrypted = \"...\"`"));
                None
            }
        };
        if let Some(source) = source {
            secrets.push(Secret { name, source });
        }
    }
    secrets
}

/// How many unknown references of a stack get a "did you mean" hint.
const HINTS_PER_STACK: usize = 100;

/// Dependencies on services of this stack must name a service declared in it.
fn check_references(ctx: &mut Ctx, stack: &Stack, declared: &[String]) {
    // When every declared service was read (a stack without errors), the stack's own index knows
    // them all; otherwise the declared names are gathered into a set of their own.
    let all_read = stack.services().len() == declared.len();
    let declared_set: HashSet<&str> =
        if all_read { HashSet::new() } else { declared.iter().map(String::as_str).collect() };
    let known = |name: &str| if all_read { stack.service_index(name).is_some() } else { declared_set.contains(name) };
    // A hint compares the name with every service: a stack full of broken references would make
    // that quadratic, so only the first ones get a hint (the rest have the same mistake, usually).
    let mut hints_left = HINTS_PER_STACK;
    for service in stack.services() {
        for (deps, required) in [(&service.requires, true), (&service.wants, false)] {
            for dep in deps {
                let DepTarget::Local(name) = &dep.target else { continue };
                if known(name) {
                    continue;
                }
                hints_left = hints_left.saturating_sub(1);
                let hint = (hints_left > 0)
                    .then(|| crate::diagnostics::did_you_mean(name, declared.iter().map(String::as_str))) // file order
                    .flatten()
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                let what = format!(
                    "service `{}` {} `{name}`, which is not a service of stack `{}`",
                    service.name,
                    if required { "requires" } else { "wants" },
                    stack.name
                );
                if required {
                    ctx.error(dep.span.clone(), format!("{what}{hint}"));
                } else {
                    // `wants` is optional by definition (kapell.toml(5): "start after cache if it exists").
                    ctx.warn(
                        dep.span.clone(),
                        format!(
                            "{what}; it is ignored unless a unit `{}` exists{hint}",
                            crate::names::service_unit(&stack.name, name, None)
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers passed through to systemd are written in decimal, whatever radix the file used.
    #[test]
    fn passed_through_integers_keep_their_value_in_any_radix() {
        let text = "[services.web]\nexec = [\"/bin/true\"]\n[services.web.systemd.Service]\nLimitNOFILE = 0x10\nNice = -5\nCPUWeight = 0o17\nIOWeight = 1_000\n";
        let parsed = parse_stack(Path::new("/etc/kapell/shop.toml"), text);
        let stack = parsed.stack.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
        let values: Vec<(&str, &str)> =
            stack.services()[0].systemd.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
        assert_eq!(values, [("LimitNOFILE", "16"), ("Nice", "-5"), ("CPUWeight", "15"), ("IOWeight", "1000")]);
    }

    /// A stack large enough to be cut, with `extra` after service `s<at>`'s table.
    fn big_stack(at: usize, extra: &str, tail: &str) -> String {
        let mut text = String::from("description = \"big\"\n[secrets.token]\nfile = \"/etc/kapell/token\"\n");
        for i in 0..400 {
            text.push_str(&format!(
                "\n[services.s{i}]  # service {i}\r\nexec = [\"/bin/sleep\", \"{i}\"]\nenv = {{ A = \"%h $X\" }}\n"
            ));
            if i > 0 {
                text.push_str(&format!("requires = [\"s{}\"]\n", i - 1));
            }
            if i % 7 == 0 {
                text.push_str(&format!("[services.s{i}.systemd.Service]\nNice = 5\n"));
            }
            if i == at {
                text.push_str(extra);
            }
        }
        text + tail
    }

    /// What `parse_in_pieces` makes of `text` (`None`: it parsed the file whole), checked to be
    /// exactly what the whole file means: the same stack, the same diagnostics at the same spans.
    fn pieces_or_whole(text: &str) -> Option<String> {
        let path = Path::new("/etc/kapell/big.toml");
        let source = Source::new(path, text);
        // Debug of the parts with an order (the stack's name index is a hash map).
        let describe = |parsed: &Checked| {
            let located = |d: &[Diagnostic]| d.iter().map(|d| format!("{} {:?}", d, d.span)).collect::<Vec<_>>();
            match parsed {
                Ok((s, d)) => {
                    format!("Ok {:?} {:?} {:?} {:?} {:?}", s.description, s.enable, s.services(), s.secrets, located(d))
                }
                Err(d) => format!("Err({:?}", located(d)),
            }
        };
        let whole = describe(&parse_whole(path, &source));
        let cut = pieces::cut(&source.text).expect("large enough to cut");
        let pieces = parse_in_pieces(path, &source, &cut).map(|p| describe(&p));
        if let Some(pieces) = &pieces {
            let at = pieces.bytes().zip(whole.bytes()).position(|(a, b)| a != b).unwrap_or(0);
            let around =
                |s: &str| s.get(at.saturating_sub(100)..(at + 200).min(s.len())).unwrap_or_default().to_string();
            assert!(pieces == &whole, "pieces and whole differ:\n{}\n---\n{}", around(pieces), around(&whole));
        }
        pieces
    }

    #[test]
    fn a_large_stack_read_in_pieces_is_the_whole_file() {
        let ok = pieces_or_whole(&big_stack(0, "", "\n[secrets.other]\nfile = \"/x\"\n")).expect("cut");
        assert!(ok.starts_with("Ok "), "{}", &ok[..ok.len().min(300)]);
        // Errors inside pieces are reported where the whole file has them.
        let errors = big_stack(250, "memory_max = 12\nuser = \"Bad User\"\nwants = [\"nope\"]\n", "");
        let bad = pieces_or_whole(&errors).expect("cut");
        assert!(bad.starts_with("Err(") && bad.contains("Bad User"), "{}", &bad[..bad.len().min(300)]);
    }

    /// Every text a cut could misread is parsed whole: header-like lines inside strings, a string
    /// from before the services to after them, tables of one service in another's piece,
    /// services defined twice, services in the stack's own keys, syntax errors.
    #[test]
    fn a_cut_that_could_mean_something_else_is_not_used() {
        let cases = [
            big_stack(100, "x = \"\"\"\n[services.hidden]\nexec = [\"/bin/evil\"]\n\"\"\"\n", ""),
            big_stack(100, "x = '''\n[services.hidden]\n'''\n", ""),
            big_stack(100, "wants = [\n\"s1\",\n[services.hidden]\n]\n", ""),
            format!("description = \"\"\"\n{}\n\"\"\"\n", big_stack(0, "", "[secrets.t]\nfile = \"/x\"\n")),
            big_stack(390, "[services.s3.systemd.Unit]\nX = 1\n", ""),
            big_stack(390, "\n[services.s3]\nexec = [\"/bin/true\"]\n", ""),
            big_stack(10, "", "[services]\nlate = { exec = [\"/bin/true\"] }\n"),
            big_stack(10, "", "").replacen("description", "services.late.exec = [\"/bin/true\"]\ndescription", 1),
            big_stack(200, "exec = [\"/bin/dup\"]\n", ""),
            big_stack(200, "user = [\"/bin/a\"\n", ""),
        ];
        for text in &cases {
            assert!(pieces_or_whole(text).is_none(), "cut used for:\n{}", &text[..300.min(text.len())]);
        }
        let swallowed = parse_stack(Path::new("/etc/kapell/big.toml"), &cases[3]);
        assert!(swallowed.stack.is_none(), "the services were inside a string");
    }

    /// Every unknown reference is reported, but only the first ones compare their name with every
    /// service for a hint: otherwise a stack of n broken references costs n² comparisons.
    #[test]
    fn hints_stop_after_the_first_unknown_references() {
        let text: String = (0..HINTS_PER_STACK + 20)
            .map(|j| format!("[services.svc{j}]\nexec = [\"/bin/true\"]\nrequires = [\"svc{j}x\"]\n"))
            .collect();
        let parsed = parse_stack(Path::new("/etc/kapell/b.toml"), &text);
        let errors: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), HINTS_PER_STACK + 20, "every unknown reference is an error");
        let hinted = errors.iter().filter(|e| e.contains("did you mean")).count();
        assert!(hinted > 0 && hinted < HINTS_PER_STACK, "{hinted} hints");
        assert!(errors[0].contains("(did you mean `svc0`?)"), "{}", errors[0]);
    }
}
