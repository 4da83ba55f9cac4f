//! The reference that kapell's TOML tree is held to: the `toml` crate's own tree of the same text
//! (`DeTable`), with its spans, and its errors. Used by the unit tests of [`super`] and by the
//! `stack_toml` fuzz target (`fuzz/`), which includes this file as a module of its own; so it
//! names kapell's types through `super`, which both places provide.

use super::{Spanned, Table, Value, parse};
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// Where `ours` differs from the `toml` crate's tree of the same text, if anywhere.
fn compare(ours: &Table<'_>, theirs: &DeTable<'_>, at: &str) -> Result<(), String> {
    if ours.len() != theirs.len() {
        return Err(format!("{at}: {} keys against {}", ours.len(), theirs.len()));
    }
    for ((k, v), (tk, tv)) in ours.iter().zip(theirs.iter()) {
        if k.get_ref() != tk.get_ref() || k.span() != tk.span() {
            return Err(format!("{at}: key {k:?} against {tk:?}"));
        }
        compare_value(v, tv, &format!("{at}.{}", k.get_ref()))?;
    }
    Ok(())
}

fn compare_value(ours: &Spanned<Value<'_>>, theirs: &toml::Spanned<DeValue<'_>>, at: &str) -> Result<(), String> {
    if ours.span() != theirs.span() {
        return Err(format!("{at}: span {:?} against {:?}", ours.span(), theirs.span()));
    }
    let same = match (ours.get_ref(), theirs.get_ref()) {
        (Value::String(a), DeValue::String(b)) => a == b,
        (Value::Integer(a), DeValue::Integer(b)) => a.digits() == b.as_str() && a.radix() == b.radix(),
        (Value::Float(a), DeValue::Float(b)) => a.as_str() == b.as_str(),
        (Value::Boolean(a), DeValue::Boolean(b)) => a == b,
        (Value::Datetime(a), DeValue::Datetime(b)) => a.parse::<toml_datetime::Datetime>().ok().as_ref() == Some(b),
        (Value::Array(a), DeValue::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{at}: {} items against {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                compare_value(x, y, &format!("{at}[{i}]"))?;
            }
            true
        }
        (Value::Table(a), DeValue::Table(b)) => return compare(a, b, at),
        _ => false,
    };
    if same { Ok(()) } else { Err(format!("{at}: {:?} against {:?}", ours.get_ref(), theirs.get_ref())) }
}

/// Errors of the `toml` crate's rules for tables and keys, rather than of the grammar.
fn is_table_rule(message: &str) -> bool {
    message == "duplicate key" || message.starts_with("cannot extend value of type")
}

/// Parses `text` both ways: the same tree when it is good. When it is not: errors here too;
/// with only table rules broken, the same errors; with the grammar broken, every grammar error
/// the `toml` crate reports (the parser is the same; strings are decoded here even after an
/// error, so there may be more), and no breach of a table rule that it does not report but for
/// those before the first grammar error.
pub fn check_against_toml(text: &str) -> Result<(), String> {
    let (ours, errors) = parse(text);
    let (theirs, their_errors) = DeTable::parse_recoverable(text);
    let theirs_set: Vec<(Option<Range<usize>>, String)> =
        their_errors.iter().map(|e| (e.span(), e.message().trim().to_string())).collect();
    // The one deliberate difference: kapell says where a key of too many parts crosses the
    // limit, the `toml` crate says nothing of where.
    let ours_set: Vec<(Option<Range<usize>>, String)> =
        errors.iter().map(|e| (e.span.clone().filter(|_| e.message != "recursion limit"), e.message.clone())).collect();
    let fail =
        |what: String| Err(format!("{what}\nerrors here: {ours_set:?}\nerrors in toml: {theirs_set:?}\n--\n{text}"));
    if errors.is_empty() != their_errors.is_empty() {
        return fail("one side found errors, the other none".into());
    }
    if errors.is_empty() {
        return compare(&ours, theirs.get_ref(), "").map_err(|e| format!("{e}\n--\n{text}"));
    }
    let grammar_broken = theirs_set.iter().any(|(_, m)| !is_table_rule(m));
    for theirs in &theirs_set {
        if (!grammar_broken || !is_table_rule(&theirs.1)) && !ours_set.contains(theirs) {
            return fail(format!("{theirs:?} is missing here"));
        }
    }
    // kapell builds its tree up to the first grammar error, and reports what it broke so far; the
    // `toml` crate drops a value in which a grammar error follows (an inline table), and the
    // breaches in it with it.
    let first_grammar_error = theirs_set
        .iter()
        .filter(|(_, m)| !is_table_rule(m))
        .filter_map(|(span, _)| span.as_ref().map(|s| s.start))
        .min()
        .unwrap_or(usize::MAX);
    for ours in &ours_set {
        let before_the_grammar_broke = ours.0.as_ref().is_some_and(|s| s.start < first_grammar_error);
        if (!grammar_broken || (is_table_rule(&ours.1) && !before_the_grammar_broke)) && !theirs_set.contains(ours) {
            return fail(format!("{ours:?} is not among toml's"));
        }
    }
    Ok(())
}
