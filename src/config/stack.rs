//! The stack schema (kapell.toml(5)): a stack file's spanned TOML tree becomes a [`Stack`], or every
//! problem found in it.

use super::reader::{At, Ctx, get, key_span};
use super::service::read_service;
use super::syntax;
use crate::diagnostics::{Diagnostic, Source};
use crate::model::{DepTarget, Secret, SecretSource, Stack};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use toml::de::DeTable;

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
    let name = crate::config::stack_name(path);
    match parse(path, text) {
        Ok((stack, diagnostics)) => Parsed { name, stack: Some(stack), diagnostics },
        Err(diagnostics) => Parsed { name, stack: None, diagnostics },
    }
}

fn parse(path: &Path, text: &str) -> Result<(Stack, Vec<Diagnostic>), Vec<Diagnostic>> {
    let source = Source::new(path, text);
    let mut ctx = Ctx::new(Arc::clone(&source));
    let (root, syntax_errors) = DeTable::parse_recoverable(&source.text);
    for e in &syntax_errors {
        let span = e.span().unwrap_or(0..0);
        let message = match e.message().trim() {
            "duplicate key" => duplicate_key(&source.text, span.clone()),
            other => other.to_string(),
        };
        ctx.error(span, message);
    }
    if !ctx.diags.is_empty() {
        return Err(ctx.diags);
    }
    let root = root.get_ref();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if let Err(e) = crate::names::check_name("stack", &stem) {
        ctx.error(0..0, format!("{e} (the stack name is the file name without .toml)"));
    }
    ctx.reject_unknown_keys(root, STACK_KEYS, "the stack");

    let description = get(root, "description").and_then(|v| ctx.string(v, "description")).and_then(|d| {
        if d.value.chars().any(char::is_control) {
            ctx.error(d.span, "`description` must be a single line without control characters");
            None
        } else {
            Some(d.value)
        }
    });
    let enable = get(root, "enable").and_then(|v| ctx.boolean(v, "enable")).unwrap_or(true);
    // Services may only name declared secrets; a declared but broken one is reported once, where it is declared.
    let declared_secrets: Vec<String> = get(root, "secrets")
        .and_then(|v| v.get_ref().as_table())
        .map(|t| t.keys().map(|k| k.get_ref().to_string()).collect())
        .unwrap_or_default();
    let secrets = get(root, "secrets")
        .and_then(|v| ctx.table(v, "secrets"))
        .map(|t| read_secrets(&mut ctx, t))
        .unwrap_or_default();

    // Every service declared, with errors or not: a service with an error still exists for the
    // references of the others (its own error is the one to report).
    let declared_services: Vec<String> = get(root, "services")
        .and_then(|v| v.get_ref().as_table())
        .map(|t| t.keys().map(|k| k.get_ref().to_string()).collect())
        .unwrap_or_default();
    let mut services = Vec::new();
    match get(root, "services").map(|v| (v, ctx.table(v, "services"))) {
        Some((_, Some(table))) => {
            // Services are read independently (each with its own diagnostics, merged in file
            // order), so one stack of 10,000 services uses every core.
            let entries: Vec<_> = table.iter().collect();
            let read = crate::parallel::map(&entries, |(key, value)| {
                let mut own = Ctx::new(Arc::clone(&ctx.source));
                let name = At { value: key.get_ref().to_string(), span: key.span() };
                let service = read_service(&mut own, &name, value, &declared_secrets);
                (service, own.diags)
            });
            for (service, diags) in read {
                ctx.diags.extend(diags);
                services.extend(service);
            }
            if table.is_empty() {
                ctx.error(key_span(root, "services").unwrap_or(0..0), "the stack has no services");
            }
        }
        Some((_, None)) => {}
        None => ctx.error(0..0, "the stack has no services: add a [services.<name>] table"),
    }

    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let stack = Stack::new(stem, source, path, description, enable, services, secrets);
    check_references(&mut ctx, &stack, &declared_services);
    if ctx.has_errors() { Err(ctx.diags) } else { Ok((stack, ctx.diags)) }
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

fn read_secrets(ctx: &mut Ctx, table: &DeTable<'_>) -> Vec<Secret> {
    let mut secrets = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().to_string();
        if let Err(e) = syntax::check_secret_name(&name) {
            ctx.error(key.span(), e);
            continue;
        }
        let context = format!("[secrets.{name}]");
        let Some(fields) = ctx.table(value, &context) else { continue };
        ctx.reject_unknown_keys(fields, &["file", "encrypted"], &context);
        let file = get(fields, "file").and_then(|v| ctx.string(v, "file"));
        let encrypted = get(fields, "encrypted").and_then(|v| ctx.string(v, "encrypted"));
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
                ctx.error(key.span(), format!("{context} needs `file = \"/path\"` or `encrypted = \"...\"`"));
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
    let names: Vec<&str> = declared.iter().map(String::as_str).collect(); // file order, for hints
    let known: HashSet<&str> = names.iter().copied().collect();
    // A hint compares the name with every service: a stack full of broken references would make
    // that quadratic, so only the first ones get a hint (the rest have the same mistake, usually).
    let mut hints_left = HINTS_PER_STACK;
    for service in stack.services() {
        for (deps, required) in [(&service.requires, true), (&service.wants, false)] {
            for dep in deps {
                let DepTarget::Local(name) = &dep.target else { continue };
                if known.contains(name.as_str()) {
                    continue;
                }
                hints_left = hints_left.saturating_sub(1);
                let hint = (hints_left > 0)
                    .then(|| crate::diagnostics::did_you_mean(name, names.iter().copied()))
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
