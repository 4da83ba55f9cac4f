//! The spanned TOML tree of a file, built straight from the events of `toml_parser`.
//!
//! `toml_parser` (the lexer and grammar under the `toml` crate) checks the syntax and hands out
//! events: a key, a scalar, an array opened, a header closed. The `toml` crate collects those
//! events in a vector and builds a tree of hash-indexed maps from them; the generator reads every
//! stack file at every boot, and that took 3–4 ms of CPU per 1,000 services in stacks of ten
//! and 10 ms in one file, against 2 and 3.6 ms here (docs/benchmarks.md). This module builds the
//! tree the schema reads as the events arrive: a table's entries are a vector in file order (the
//! schema's tables hold a handful of keys; a large table gets a hash index), strings borrow from
//! the text unless they have escapes, and a key's parts share one buffer.
//!
//! What a table may and may not do (a header defined twice, dotted keys into a table a header
//! defined, extending an inline table or a static array) follows the `toml` crate, with its
//! messages: a test compares the two on every kind of document.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use toml_parser::decoder::{Encoding, ScalarKind};
use toml_parser::parser::{EventReceiver, RecursionGuard, ValidateWhitespace};
use toml_parser::{ErrorSink, ParseError, Source, Span};

/// How deep arrays and inline tables may nest, and how many parts a key may have (the `toml`
/// crate's limit). With [`Builder::within_depth`], a hostile file cannot make the parser recurse
/// without bound; the tree of a good file is at most a few thousand tables deep (the parts of
/// headers, of dotted keys and of nested inline tables add up).
const DEPTH_LIMIT: u32 = 80;

/// Tables with more keys than this get a hash index: looking a key up in a few keys by comparing
/// them is cheaper than hashing it.
const SCAN_UP_TO: usize = 16;

/// A value or key and where it is written in the parsed text.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    span: Range<usize>,
    value: T,
}

impl<T> Spanned<T> {
    pub fn new(span: Range<usize>, value: T) -> Self {
        Self { span, value }
    }

    pub fn get_ref(&self) -> &T {
        &self.value
    }

    pub fn span(&self) -> Range<usize> {
        self.span.clone()
    }
}

/// A key as written, decoded (`"a\tb"` is the key with a tab).
pub type Key<'i> = Spanned<Cow<'i, str>>;

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'i> {
    String(Cow<'i, str>),
    Integer(Integer<'i>),
    Float(Float<'i>),
    Boolean(bool),
    /// A date and/or time, checked and kept as written (kapell has no key of this type).
    Datetime(&'i str),
    Array(Vec<Spanned<Value<'i>>>),
    Table(Table<'i>),
}

/// An integer as `toml_parser` decoded it: the digits, without the radix prefix (`0x`) and the
/// underscores, with the sign; and the radix.
#[derive(Debug, Clone, PartialEq)]
pub struct Integer<'i> {
    digits: Cow<'i, str>,
    radix: u32,
}

impl Integer<'_> {
    /// The value, unless it does not fit in an `i64`.
    pub fn value(&self) -> Option<i64> {
        i64::from_str_radix(&self.digits, self.radix).ok()
    }

    /// The digits as decoded: with the sign, without the radix prefix and the underscores.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    pub fn radix(&self) -> u32 {
        self.radix
    }
}

/// A float as `toml_parser` decoded it (`1.5`, `-inf`, `nan`; no underscores).
#[derive(Debug, Clone, PartialEq)]
pub struct Float<'i>(Cow<'i, str>);

impl Float<'_> {
    pub fn value(&self) -> Option<f64> {
        self.0.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'i> Value<'i> {
    /// The value's TOML type, for messages ("found integer").
    pub fn type_str(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }

    pub fn as_table(&self) -> Option<&Table<'i>> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<&Integer<'i>> {
        match self {
            Value::Integer(n) => Some(n),
            _ => None,
        }
    }
}

/// A table's entries in the order the file gives them.
#[derive(Debug, Clone, Default)]
pub struct Table<'i> {
    entries: Vec<(Key<'i>, Spanned<Value<'i>>)>,
    /// Position of each key in `entries`, once there are more than [`SCAN_UP_TO`]. Boxed: few
    /// tables have one, and every table and value is smaller for it (a map is 48 bytes).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Cow<'i, str>, usize>>>,
    /// How the table came to be, for the rules of what may add to it later.
    origin: Origin,
}

/// How a table came to be. TOML decides by this what may add keys to it later.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Origin {
    /// Created on the way to another table (`[a.b]` creates `a`), not defined itself yet.
    implicit: bool,
    /// Created by a dotted key (`a.b = 1` creates `a`).
    dotted: bool,
    /// Written as `{ … }`: complete where it is written.
    inline: bool,
    /// An element of an array of tables (`[[a]]`), which later `[[a]]` headers extend.
    element: bool,
}

impl PartialEq for Table<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<'i> Table<'i> {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_origin(origin: Origin) -> Self {
        Self { entries: Vec::new(), index: None, origin }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key<'i>, &Spanned<Value<'i>>)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Key<'i>> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn get(&self, key: &str) -> Option<&Spanned<Value<'i>>> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k.value == key),
        }
    }

    /// Adds an entry (the caller has checked that `key` is new) and returns its position.
    fn push(&mut self, key: Key<'i>, value: Spanned<Value<'i>>) -> usize {
        let at = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key.value.clone(), at);
            }
            None if at == SCAN_UP_TO => {
                let mut index: HashMap<Cow<'i, str>, usize> =
                    self.entries.iter().enumerate().map(|(i, (k, _))| (k.value.clone(), i)).collect();
                index.insert(key.value.clone(), at);
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        self.entries.push((key, value));
        at
    }

    /// Removes the entry at `at`: the entries after it move up one, and so do their positions in
    /// the index (the last entry goes at no cost: a header usually follows its own sub-tables).
    fn remove(&mut self, at: usize) -> (Key<'i>, Spanned<Value<'i>>) {
        let removed = self.entries.remove(at);
        if let Some(index) = &mut self.index {
            index.remove(&removed.0.value);
            for (key, _) in &self.entries[at..] {
                if let Some(i) = index.get_mut(&key.value) {
                    *i -= 1;
                }
            }
        }
        removed
    }

    /// The table a header path step leads to: a table, or the last element of an array of tables.
    fn child(&mut self, at: usize) -> Option<&mut Table<'i>> {
        match &mut self.entries[at].1.value {
            Value::Table(t) => Some(t),
            Value::Array(items) => match items.last_mut().map(|i| &mut i.value) {
                Some(Value::Table(t)) if t.origin.element => Some(t),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Is `value` an array of tables (`[[a]]`) rather than an array written as a value? Every element
/// of one is an `element` table, and it is never empty, so its first element tells.
fn is_array_of_tables(value: &Value<'_>) -> bool {
    matches!(value, Value::Array(items) if matches!(items.first().map(|i| &i.value), Some(Value::Table(t)) if t.origin.element))
}

/// A syntax error: where, and what (with what was expected, as the `toml` crate words it).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

/// Parses `text` into its root table and every syntax error found. With errors, the table is not
/// meant to be used: after a grammar error it holds what was read before it.
pub fn parse(text: &str) -> (Table<'_>, Vec<SyntaxError>) {
    let source = Source::new(text);
    // `Lexer::into_vec` reserves 2 tokens per 7 bytes, measured on Cargo manifests; a stack
    // file has more (0.37 per byte in the generator benchmark's), and the vector was grown, and
    // copied, once per file: 3 % of the generator's instructions at 1,000 services
    // (docs/benchmarks.md, the run of 2026-12-08).
    let mut tokens = Vec::with_capacity(text.len() / 5 * 2 + 16);
    tokens.extend(source.lex());
    let failed = Cell::new(false);
    let mut sink = Sink { errors: Vec::new(), failed: &failed };
    let mut builder = Builder::new(source, &failed);
    {
        let mut whitespace = ValidateWhitespace::new(&mut builder, source);
        let mut guard = RecursionGuard::new(&mut whitespace, DEPTH_LIMIT);
        toml_parser::parser::parse_document(&tokens, &mut guard, &mut sink);
    }
    // Every error is reported by the parser; should one ever be only marked, or the text end
    // inside a value, the tree is incomplete and must not pass for a file's content.
    if sink.errors.is_empty() {
        let end = text.len()..text.len();
        let unfinished = !builder.nesting.is_empty() || !matches!(builder.state, State::Line);
        if let Some(span) = builder.marked.clone().or(unfinished.then_some(end)) {
            sink.errors.push(SyntaxError { span: Some(span), message: "invalid TOML".to_string() });
        }
    }
    let mut errors = sink.errors;
    errors.append(&mut builder.rules);
    errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
    (builder.root, errors)
}

/// Collects errors, and tells the builder that the tree is no longer worth building.
struct Sink<'a> {
    errors: Vec<SyntaxError>,
    failed: &'a Cell<bool>,
}

impl ErrorSink for Sink<'_> {
    fn report_error(&mut self, error: ParseError) {
        self.failed.set(true);
        self.errors.push(syntax_error(&error));
    }
}

/// The `toml` crate's wording: the description, then what was expected.
fn syntax_error(error: &ParseError) -> SyntaxError {
    let mut message = error.description().to_string();
    if let Some(expected) = error.expected() {
        message.push_str(", expected ");
        if expected.is_empty() {
            message.push_str("nothing");
        }
        for (i, expected) in expected.iter().enumerate() {
            if i != 0 {
                message.push_str(", ");
            }
            match expected {
                toml_parser::Expected::Literal("\n") => message.push_str("newline"),
                toml_parser::Expected::Literal("`") => message.push_str("'`'"),
                toml_parser::Expected::Literal(s) if s.chars().all(|c| c.is_ascii_control()) => {
                    message.push_str(&format!("`{}`", s.escape_debug()));
                }
                toml_parser::Expected::Literal(s) => message.push_str(&format!("`{s}`")),
                toml_parser::Expected::Description(s) => message.push_str(s),
                _ => message.push_str("etc"),
            }
        }
    }
    SyntaxError { span: error.unexpected().map(|s| s.start()..s.end()), message }
}

/// What the builder expects next.
#[derive(Debug, PartialEq)]
enum State {
    /// A key or a header.
    Line,
    /// The keys of a header.
    Header { array: bool, start: Span },
    /// The parts of a dotted key, until `=`.
    Key,
    /// The value of a key, with the arrays and inline tables opened in it.
    Value,
}

/// An array or inline table being read.
enum Nested<'i> {
    Array {
        start: usize,
        items: Vec<Spanned<Value<'i>>>,
    },
    /// An inline table, and where the key of its value being read starts in [`Builder::keys`].
    Inline {
        start: usize,
        table: Table<'i>,
        keys_from: usize,
        /// Between the `=` of an entry and the end of its value.
        in_value: bool,
    },
}

struct Builder<'i, 'f> {
    source: Source<'i>,
    root: Table<'i>,
    /// The table that key/value lines go to, as positions from the root (each into a table, or
    /// into the last element of an array of tables); `None` after a header that is in error.
    current: Option<Vec<usize>>,
    /// Where lines go after a header that is in error.
    nowhere: Table<'i>,
    state: State,
    /// The parts of the key being read: a header's or a line's, then those of the inline tables
    /// opened in its value (one buffer for all, so a key costs no allocation of its own).
    keys: Vec<Key<'i>>,
    nesting: Vec<Nested<'i>>,
    /// Set once the grammar is broken: the file will be rejected, and the tree is not built
    /// further (events after such an error need not make sense).
    failed: &'f Cell<bool>,
    /// Where the parser marked an error, in case it said nothing about it.
    marked: Option<Range<usize>>,
    /// Breaches of the rules for tables and keys (a key written twice, a table defined twice):
    /// the file is rejected, but the tree is still built so that every one of them is reported.
    rules: Vec<SyntaxError>,
    /// The parts of the dotted key being read so far, and whether a `.` came after the last one.
    /// Counted even once the tree is no longer built, so that a key of too many parts is reported
    /// after other errors too, as the `toml` crate reports it.
    key_parts: usize,
    after_key_sep: bool,
}

impl<'i, 'f> Builder<'i, 'f> {
    fn new(source: Source<'i>, failed: &'f Cell<bool>) -> Self {
        Self {
            source,
            root: Table::new(),
            current: Some(Vec::new()),
            nowhere: Table::new(),
            state: State::Line,
            keys: Vec::new(),
            nesting: Vec::new(),
            failed,
            marked: None,
            rules: Vec::new(),
            key_parts: 0,
            after_key_sep: false,
        }
    }

    fn raw(&self, span: Span, encoding: Option<Encoding>) -> toml_parser::Raw<'i> {
        let text = &self.source.input()[span.start()..span.end()];
        toml_parser::Raw::new_unchecked(text, encoding, span)
    }

    fn decode_key(&self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) -> Key<'i> {
        let mut decoded = Cow::Borrowed("");
        self.raw(span, encoding).decode_key(&mut decoded, error);
        Spanned::new(span.start()..span.end(), decoded)
    }

    fn decode_scalar(&self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) -> Value<'i> {
        let mut decoded = Cow::Borrowed("");
        match self.raw(span, encoding).decode_scalar(&mut decoded, error) {
            ScalarKind::String => Value::String(decoded),
            ScalarKind::Boolean(b) => Value::Boolean(b),
            ScalarKind::Float => Value::Float(Float(decoded)),
            ScalarKind::Integer(radix) => Value::Integer(Integer { digits: decoded, radix: radix.value() }),
            ScalarKind::DateTime => {
                if let Err(e) = decoded.parse::<toml_datetime::Datetime>() {
                    error.report_error(ParseError::new(e.to_string()).with_unexpected(span));
                }
                Value::Datetime(self.raw(span, encoding).as_str())
            }
        }
    }

    /// A finished value: into the array or inline table it is in, or to its line's table.
    fn deliver(&mut self, value: Spanned<Value<'i>>) {
        match self.nesting.last_mut() {
            Some(Nested::Array { items, .. }) => items.push(value),
            Some(Nested::Inline { table, keys_from, in_value, .. }) => {
                if !*in_value {
                    return; // the parser has reported the missing key
                }
                *in_value = false;
                let keys_from = *keys_from;
                if let Some(key) = self.keys.pop() {
                    insert_inline(table, &self.keys[keys_from..], key, value, &mut self.rules);
                }
                self.keys.truncate(keys_from);
            }
            None => {
                if self.state == State::Value
                    && let Some(key) = self.keys.pop()
                {
                    let table = match &self.current {
                        Some(steps) => walk(&mut self.root, steps),
                        None => Some(&mut self.nowhere),
                    };
                    if let Some(table) = table {
                        insert_line(table, &self.keys, key, value, &mut self.rules);
                    }
                }
                self.keys.clear();
                self.state = State::Line;
            }
        }
    }

    /// `[a.b]` or `[[a.b]]` read: the table that the following lines fill.
    fn header(&mut self, array: bool, span: Range<usize>) {
        self.current = None;
        self.nowhere = Table::new();
        let Some(key) = self.keys.pop() else { return };
        let mut steps = Vec::with_capacity(self.keys.len() + 1);
        let Some(parent) = descend(&mut self.root, &self.keys, false, &mut self.rules, Some(&mut steps)) else {
            return;
        };
        let existing = parent.position(&key.value);
        let at = if array {
            let element = Spanned::new(
                span.clone(),
                Value::Table(Table::with_origin(Origin { element: true, ..Origin::default() })),
            );
            match existing {
                None => parent.push(key, Spanned::new(span, Value::Array(vec![element]))),
                Some(i) if is_array_of_tables(&parent.entries[i].1.value) => {
                    if let Value::Array(items) = &mut parent.entries[i].1.value {
                        items.push(element);
                    }
                    i
                }
                Some(i) => {
                    let old = parent.entries[i].1.span();
                    self.rules.push(duplicate(&key, Some(old)));
                    return;
                }
            }
        } else {
            // A table defined before only on the way to another one (`[a.b]` before `[a]`) is
            // defined now, and moves to where its header is; anything else is a second definition.
            let table = match existing {
                None => Table::new(),
                Some(i) => {
                    let (old_key, old) = parent.remove(i);
                    match old.value {
                        Value::Table(t) if t.origin.implicit && !t.origin.dotted => t,
                        old => {
                            self.rules.push(duplicate(&key, Some(old_key.span())));
                            match old {
                                Value::Table(t) => t,
                                _ => Table::new(),
                            }
                        }
                    }
                }
            };
            parent.push(key, Spanned::new(span, Value::Table(table)))
        };
        steps.push(at);
        if let Some(table) = walk(&mut self.root, &steps) {
            table.origin.implicit = false;
            table.origin.dotted = false;
            self.current = Some(steps);
        }
    }
}

/// The table at `steps` from `root` (see [`Builder::current`]).
fn walk<'t, 'i>(mut table: &'t mut Table<'i>, steps: &[usize]) -> Option<&'t mut Table<'i>> {
    for &at in steps {
        table = table.child(at)?;
    }
    Some(table)
}

/// "duplicate key", at `key`, with where it was first written when known.
fn duplicate(key: &Key<'_>, first: Option<Range<usize>>) -> SyntaxError {
    let error = ParseError::new("duplicate key").with_unexpected(span_of(key));
    syntax_error(&match first {
        Some(first) => error.with_context(Span::new_unchecked(first.start, first.end)),
        None => error,
    })
}

/// `path.key = value` on a line of the document, into `table` (the root or a header's table).
fn insert_line<'i>(
    table: &mut Table<'i>,
    path: &[Key<'i>],
    key: Key<'i>,
    value: Spanned<Value<'i>>,
    rules: &mut Vec<SyntaxError>,
) {
    let dotted = !path.is_empty();
    let Some(table) = descend(table, path, dotted, rules, None) else { return };
    // Dotted keys may not add to a table that a header or an inline table defined.
    if dotted && !table.origin.implicit {
        rules.push(duplicate(&key, None));
        return;
    }
    insert_new(table, key, value, rules);
}

/// `path.key = value` inside `{ … }`.
fn insert_inline<'i>(
    table: &mut Table<'i>,
    path: &[Key<'i>],
    key: Key<'i>,
    value: Spanned<Value<'i>>,
    rules: &mut Vec<SyntaxError>,
) {
    let Some(table) = descend_inline(table, path, rules) else { return };
    // Cannot happen as `descend_inline` is written (every table it returns for a dotted key was
    // made by one, and the inline table itself was not); the `toml` crate checks it too.
    if table.origin.dotted == path.is_empty() {
        rules.push(duplicate(&key, None));
        return;
    }
    insert_new(table, key, value, rules);
}

/// Adds `key` to `table`, or reports it as a duplicate.
fn insert_new<'i>(table: &mut Table<'i>, key: Key<'i>, value: Spanned<Value<'i>>, rules: &mut Vec<SyntaxError>) {
    match table.position(&key.value) {
        None => {
            table.push(key, value);
        }
        Some(i) => rules.push(duplicate(&key, Some(table.entries[i].0.span()))),
    }
}

/// The table that `path` names below `table` (on a line of the document, or in a header from
/// the root), creating the tables on the way; with `steps`, the positions taken are recorded.
fn descend<'t, 'i>(
    mut table: &'t mut Table<'i>,
    path: &[Key<'i>],
    dotted: bool,
    rules: &mut Vec<SyntaxError>,
    mut steps: Option<&mut Vec<usize>>,
) -> Option<&'t mut Table<'i>> {
    for key in path {
        let at = match table.position(&key.value) {
            None => {
                let new = Table::with_origin(Origin { implicit: true, dotted, ..Origin::default() });
                table.push(key.clone(), Spanned::new(key.span(), Value::Table(new)))
            }
            Some(at) => {
                let old = &mut table.entries[at].1;
                let old_span = old.span();
                match &mut old.value {
                    Value::Table(t) if t.origin.inline => {
                        let message = "cannot extend value of type inline table with a dotted key";
                        rules.push(syntax_error(&ParseError::new(message).with_unexpected(span_of(key))));
                        return None;
                    }
                    Value::Table(t) if dotted && !t.origin.implicit => {
                        rules.push(duplicate(key, None));
                        return None;
                    }
                    Value::Table(t) => t.origin.dotted |= dotted,
                    other if is_array_of_tables(other) => {}
                    other => {
                        rules.push(cannot_extend(other, key, old_span));
                        return None;
                    }
                }
                at
            }
        };
        if let Some(steps) = steps.as_deref_mut() {
            steps.push(at);
        }
        table = table.child(at)?;
    }
    Some(table)
}

/// [`descend`] inside an inline table: only its own tables can be reached.
fn descend_inline<'t, 'i>(
    mut table: &'t mut Table<'i>,
    path: &[Key<'i>],
    rules: &mut Vec<SyntaxError>,
) -> Option<&'t mut Table<'i>> {
    for key in path {
        let at = match table.position(&key.value) {
            None => {
                let new = Table::with_origin(Origin { implicit: true, dotted: true, inline: true, element: false });
                table.push(key.clone(), Spanned::new(key.span(), Value::Table(new)))
            }
            Some(at) => {
                let old = &table.entries[at].1;
                match &old.value {
                    Value::Table(t) if !t.origin.implicit => {
                        rules.push(duplicate(key, None));
                        return None;
                    }
                    Value::Table(_) => at,
                    other => {
                        rules.push(cannot_extend(other, key, old.span()));
                        return None;
                    }
                }
            }
        };
        let Some(Value::Table(next)) = table.entries.get_mut(at).map(|e| &mut e.1.value) else { return None };
        table = next;
    }
    Some(table)
}

fn cannot_extend(value: &Value<'_>, key: &Key<'_>, old: Range<usize>) -> SyntaxError {
    let message = format!("cannot extend value of type {} with a dotted key", value.type_str());
    syntax_error(
        &ParseError::new(message).with_unexpected(span_of(key)).with_context(Span::new_unchecked(old.start, old.end)),
    )
}

fn span_of<T>(key: &Spanned<T>) -> Span {
    Span::new_unchecked(key.span.start, key.span.end)
}

impl EventReceiver for Builder<'_, '_> {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.keys.clear();
        self.state = State::Header { array: false, start: span };
    }

    fn array_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.keys.clear();
        self.state = State::Header { array: true, start: span };
    }

    fn std_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.close_header(span);
    }

    fn array_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.close_header(span);
    }

    fn inline_table_open(&mut self, span: Span, error: &mut dyn ErrorSink) -> bool {
        let table = Table::with_origin(Origin { inline: true, ..Origin::default() });
        self.nesting.push(Nested::Inline { start: span.start(), table, keys_from: self.keys.len(), in_value: false });
        self.within_depth(span, error)
    }

    fn inline_table_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        if let Some(Nested::Inline { start, table, keys_from, .. }) = self.nesting.pop() {
            self.keys.truncate(keys_from);
            if !self.failed.get() {
                self.deliver(Spanned::new(start..span.end(), Value::Table(table)));
            }
        }
    }

    fn array_open(&mut self, span: Span, error: &mut dyn ErrorSink) -> bool {
        self.nesting.push(Nested::Array { start: span.start(), items: Vec::new() });
        self.within_depth(span, error)
    }

    fn array_close(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        if let Some(Nested::Array { start, items }) = self.nesting.pop()
            && !self.failed.get()
        {
            self.deliver(Spanned::new(start..span.end(), Value::Array(items)));
        }
    }

    fn simple_key(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        self.key_parts = if std::mem::take(&mut self.after_key_sep) { self.key_parts + 1 } else { 1 };
        if self.key_parts == DEPTH_LIMIT as usize + 1 {
            error.report_error(ParseError::new("recursion limit").with_unexpected(span));
        }
        let key = self.decode_key(span, encoding, error);
        if self.failed.get() {
            return;
        }
        match (&self.state, self.nesting.last()) {
            (State::Header { .. } | State::Key, _) | (State::Value, Some(Nested::Inline { in_value: false, .. })) => {}
            (State::Line, _) => {
                self.state = State::Key;
                self.keys.clear();
            }
            (State::Value, _) => return,
        }
        self.keys.push(key);
    }

    fn key_sep(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.after_key_sep = true;
    }

    fn key_val_sep(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        match (&self.state, self.nesting.last_mut()) {
            (State::Key, _) => self.state = State::Value,
            (State::Value, Some(Nested::Inline { in_value, .. })) => *in_value = true,
            _ => {}
        }
    }

    fn scalar(&mut self, span: Span, encoding: Option<Encoding>, error: &mut dyn ErrorSink) {
        // Decoded even after an error, so that every bad string is reported at once.
        let value = self.decode_scalar(span, encoding, error);
        if !self.failed.get() {
            self.deliver(Spanned::new(span.start()..span.end(), value));
        }
    }

    fn error(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.marked.get_or_insert(span.start()..span.end());
    }
}

impl Builder<'_, '_> {
    /// May the parser go into the array or inline table just opened? `RecursionGuard` (around
    /// this builder) says no past [`DEPTH_LIMIT`], but it counts every close, and recovering from
    /// an error the parser can send a close without an open: its count can go below zero, and a
    /// later nesting past the limit. This count cannot (a close with nothing open takes nothing
    /// away), so it stops the parser one level after the guard would.
    fn within_depth(&mut self, span: Span, error: &mut dyn ErrorSink) -> bool {
        if self.nesting.len() <= DEPTH_LIMIT as usize + 1 {
            return true;
        }
        error.report_error(ParseError::new("cannot recurse further; max recursion depth met").with_unexpected(span));
        false
    }

    fn close_header(&mut self, close: Span) {
        if let State::Header { array, start } = std::mem::replace(&mut self.state, State::Line)
            && !self.failed.get()
        {
            self.header(array, start.start()..close.end());
        }
        self.keys.clear();
    }
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::reference::check_against_toml;
    use super::*;
    use proptest::prelude::*;

    /// What TOML allows and forbids about tables, keys and values, a document each, and whether it
    /// is good TOML (so that a typo cannot turn a comparison of trees into one of errors).
    const DOCUMENTS: &[(&str, bool)] = &[
        ("", true),
        (
            "a = 1\nb = 'x'\nc = \"y\\tz\"\nd = true\ne = 1.5\nf = 0x1F\ng = 1_000\nh = 0o17\ni = 0b101\nj = inf\nk = -nan\nl = 0x0b12\nm = -9_223_372_036_854_775_808\nn = 6.02e+23\n",
            true,
        ),
        ("h = -0o17\n", false),
        ("a = 1979-05-27T07:32:00Z\nb = 1979-05-27\nc = 07:32:00\nd = 1979-05-27 07:32:00.999\n", true),
        ("a = 1979-13-45\n", false),
        ("a = \"\"\"\nmulti\\\n   line\"\"\"\nb = '''\nraw\\n'''\n", true),
        ("\"quoted key\" = 1\n'literal.key' = 2\n\"\\u00e9\" = 3\n\"\" = 4\n", true),
        ("a = 1\n\"b\" = 2\n'c' = 3\n\"\\u0064\" = 4\n[ \"x\" . 'y' . z ]\nk = { a = 1,\n  b = 2 # two\n}\n", true),
        ("a = 1\n\"\\u0061\" = 2\n", false),
        ("a.b.c = 1\na.b.d = 2\na.e = 3\n", true),
        ("a.b = 1\na.b = 2\n", false),
        ("a = 1\na.b = 2\n", false),
        ("a = [1]\na.b = 2\n", false),
        ("a = {x = 1}\na.b = 2\n", false),
        ("[a]\nx = 1\n[a]\ny = 2\n", false),
        ("[a.b]\nx = 1\n[a]\ny = 2\n", true),
        ("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", false),
        ("[a.b.c]\nz = 9\n[a]\nb.x = 1\n", true),
        ("[a.b.c.d]\nz = 9\n[a]\nb.c.d.k.t = 1\n", false),
        ("[fruit]\napple.color = 'red'\n[fruit.apple]\nx = 1\n", false),
        ("[fruit]\napple.color = 'red'\n[fruit.apple.texture]\nsmooth = true\n", true),
        ("[product]\ntype.name = 'Nail'\ntype = { edible = false }\n", false),
        ("a = {b = 1}\n[a]\nc = 2\n", false),
        ("a = {b = 1}\n[a.c]\nd = 2\n", false),
        ("a = 1\n[a]\n", false),
        ("a = 1\n[a.b]\n", false),
        ("[[a]]\nx = 1\n[[a]]\nx = 2\n[a.b]\ny = 3\n[[a.c]]\nz = 4\n", true),
        ("[[a]]\n[a]\n", false),
        ("[a]\n[[a]]\n", false),
        ("a = []\n[[a]]\n", false),
        ("a = [1, 2]\n[[a]]\n", false),
        ("[[a.b]]\n[a]\nb = 1\n", false),
        ("[[a]]\nb.c = 1\n[[a]]\nb.c = 2\n", true),
        ("[a.b]\n[a.b.c]\n[a]\n[a.b.d]\n", true),
        ("[x.y.z.w]\n[x]\n[x.y]\n[x.y.z]\n", true),
        ("t = {a.b = 1, a.c = 2, d = {e = 3}}\n", true),
        ("t = {a.b = 1, a = 2}\n", false),
        ("t = {a = {x = 1}, a.b = 2}\n", false),
        ("t = {a = 1, a = 2}\n", false),
        ("t = {a = 1, a.b = 2}\n", false),
        ("t = {a = [1], a.b = 2}\n", false),
        ("t = {}\nt.x = 1\n", false),
        ("t = {\n  a = 1,\n  b = 2,\n}\n", true),
        ("arr = [ {a = 1}, {a.b = 2}, [3, [4]], 'x', ]\n", true),
        ("arr = [\n  1, # one\n  2,\n]\n", true),
        ("[a]\nb = 1 # comment\n# another\n[c] # c\n", true),
        ("[ a . b ]\n[ 'c' . \"d\" ]\n", true),
        ("[[ a ]]\n[[ a . b ]]\n", true),
        ("a = 1\n\n\n[b]\n\n", true),
        ("[services.web]\nimage = \"x\"\n[services.web]\nimage = \"y\"\n", false),
        ("[services.web]\nimage = \"x\"\nimage = \"y\"\n", false),
        ("[services.web.health]\ncmd = ['x']\n[services.db]\nexec = ['/y']\n[services.web]\nimage = 'z'\n", true),
        // The grammar's errors.
        ("a = \n", false),
        ("= 1\n", false),
        ("a = 1 b = 2\n", false),
        ("a = [1, 2\n", false),
        ("a = {b = 1\n", false),
        ("[a\n", false),
        ("[[a]\n", false),
        ("a = \"unterminated\n", false),
        ("a = \"bad \\q escape\"\nb = \"and \\x another\"\n", false),
        ("a = 01\n", false),
        ("a = 1__0\n", false),
        ("a.b. = 1\n", false),
        ("[]\n", false),
        ("a = 'x' 'y'\n", false),
        ("a = \"x\"\u{7}\n", false),
        ("a = 1\r\nb = 2\r\n", true),
        ("a = 1\rb = 2\n", false),
        ("a = [1, {b = }]\n", false),
        ("[a]]\n", false),
        ("a = {{}, {}}\nb = [[[1]]]\n", false),
        // A key written twice in an inline table that is never closed: reported here, not by the
        // `toml` crate, which drops the table (found by the `stack_toml` fuzz target).
        ("a = { B = 1, B = \"x\\\", C = \"  p  \" }\n", false),
    ];

    #[test]
    fn every_kind_of_document_reads_as_the_toml_crate_reads_it() {
        for &(text, good) in DOCUMENTS {
            if let Err(e) = check_against_toml(text) {
                panic!("{e}");
            }
            assert_eq!(parse(text).1.is_empty(), good, "{text:?} should be {}", if good { "good" } else { "bad" });
        }
    }

    /// A table with an index whose entries move: the index must follow them.
    #[test]
    fn tables_that_move_within_an_indexed_table_keep_their_place() {
        let mut text: String = (0..20).map(|i| format!("[t.k{i}.x]\n")).collect();
        text.push_str("[t.k3]\ny = 1\n[t.k19]\n[t.k5.z]\n[t.k3.w]\n[t.k0]\n[t.k0.v]\n");
        if let Err(e) = check_against_toml(&text) {
            panic!("{e}");
        }
        let (root, errors) = parse(&text);
        assert!(errors.is_empty(), "{errors:?}");
        let Some(Value::Table(t)) = root.get("t").map(Spanned::get_ref) else { panic!("no t") };
        assert!(t.index.is_some());
        for (i, key) in t.keys().enumerate() {
            assert_eq!(t.position(key.get_ref()), Some(i), "{key:?}");
        }
    }

    /// A file that opens inline tables inside one that is already in error, then nests arrays
    /// far past the limit: an error, without recursing as deep as the brackets go.
    #[test]
    fn closes_without_opens_do_not_lift_the_nesting_limit() {
        let text = format!("a = {{{}}}\nb = {}1{}\n", "{}".repeat(20_000), "[".repeat(20_100), "]".repeat(20_100));
        let worker = std::thread::Builder::new().stack_size(2 << 20).spawn(move || parse(&text).1.is_empty());
        assert!(!worker.expect("spawn").join().expect("no stack overflow"));
    }

    /// Integers in every radix, as the schema reads them.
    #[test]
    fn integers_are_read_in_their_radix() {
        let (root, errors) = parse("a = 0x0b12\nb = 0o17\nc = 0b101\nd = -1_000\ne = +7\nf = 9223372036854775808\n");
        assert!(errors.is_empty(), "{errors:?}");
        let value = |k: &str| root.get(k).and_then(|v| v.get_ref().as_integer()).and_then(Integer::value);
        assert_eq!(
            ["a", "b", "c", "d", "e", "f"].map(value),
            [Some(0x0b12), Some(0o17), Some(0b101), Some(-1000), Some(7), None]
        );
    }

    #[test]
    fn the_repositorys_own_toml_files_read_as_the_toml_crate_reads_them() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("examples"), root.join("tests"), root.join("docs"), root.join("packaging")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for path in entries.map(|e| e.expect("entry").path()) {
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() >= 5, "found only {files:?}");
        for path in files {
            let Ok(text) = std::fs::read_to_string(&path) else { continue }; // a test of bad bytes
            if let Err(e) = check_against_toml(&text) {
                panic!("{}: {e}", path.display());
            }
        }
    }

    #[test]
    fn a_large_table_is_indexed_and_keeps_its_order() {
        let text: String = (0..100).map(|i| format!("[services.s{i}]\nexec = [\"/bin/true\"]\n")).collect();
        let (root, errors) = parse(&text);
        assert!(errors.is_empty(), "{errors:?}");
        let Some(Value::Table(services)) = root.get("services").map(Spanned::get_ref) else { panic!("no services") };
        assert!(services.index.is_some());
        assert_eq!(services.keys().nth(57).map(|k| k.get_ref().as_ref()), Some("s57"));
        assert!(services.get("s99").is_some() && services.get("s100").is_none());
        // The index is what finds the duplicate.
        let (_, errors) = parse(&format!("{text}[services.s42]\n"));
        assert_eq!(errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["duplicate key"]);
        let redefined = format!("{text}[services.s42]\n[services.s3.health]\n[services.s3]\n");
        if let Err(e) = check_against_toml(&redefined) {
            panic!("{e}");
        }
    }

    /// Keys of more parts than the limit, also where their parts are already errors (found by the
    /// `stack_toml` fuzz target: a key of 119 empty parts).
    #[test]
    fn a_key_of_too_many_parts_is_reported_as_the_toml_crate_reports_it() {
        for text in [
            format!("{} = 1\n", vec!["k"; 100].join(".")),
            format!("de{}scription = 42\n", ".".repeat(118)),
            format!("a = 1\nb..c = 2\n{} = 3\n", vec!["k"; 81].join(".")),
            format!("[{}]\n", vec!["k"; 100].join(".")),
            format!("[a..b]\n[{}]\n", vec!["k"; 90].join(".")),
            format!("a = {{ {} = 1 }}\n", vec!["k"; 100].join(".")),
            format!("{} = 1\n", vec!["k"; 80].join(".")),
            format!("{} = 1\n", vec!["k"; 81].join(".")),
        ] {
            if let Err(e) = check_against_toml(&text) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn nesting_past_the_limit_is_an_error_not_a_deep_recursion() {
        let deep = format!("a = {}1{}\n", "[".repeat(500), "]".repeat(500));
        assert!(!parse(&deep).1.is_empty());
        let inline = format!("a = {}1{}\n", "{b = ".repeat(500), "}".repeat(500));
        assert!(!parse(&inline).1.is_empty());
        let dotted = format!("{} = 1\n", vec!["k"; 500].join("."));
        assert!(!parse(&dotted).1.is_empty());
        let header = format!("[{}]\n", vec!["k"; 500].join("."));
        assert!(!parse(&header).1.is_empty());
    }

    /// Documents made of the lines that decide what a table is, on a few names, so that they
    /// meet each other in every order.
    fn document() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a", "b", "c"]);
        let path = prop::collection::vec(name, 1..4).prop_map(|p| p.join("."));
        let value = prop::sample::select(vec![
            "1",
            "'s'",
            "true",
            "1.5",
            "[1, 2]",
            "[]",
            "{}",
            "{x = 1}",
            "{a.b = 1, a.c = 2}",
            "[{a = 1}, {b.c = 2}]",
            "1979-05-27",
        ]);
        let line = prop_oneof![
            path.clone().prop_map(|p| format!("[{p}]")),
            path.clone().prop_map(|p| format!("[[{p}]]")),
            (path, value).prop_map(|(p, v)| format!("{p} = {v}")),
        ];
        prop::collection::vec(line, 0..10).prop_map(|lines| lines.join("\n"))
    }

    /// Anything made of TOML's tokens, mostly not TOML.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "[", "]", "{", "}", "=", ",", ".", "'", "\"", "a", "b", "1", "#", "\n", " ", "[[", "]]", "x = ", "\n[a]\n",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn any_mix_of_tokens_is_read_without_panic_and_rejected_when_toml_rejects_it(text in token_soup()) {
            check_against_toml(&text).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn generated_documents_read_as_the_toml_crate_reads_them(text in document()) {
            check_against_toml(&text).map_err(TestCaseError::fail)?;
        }
    }
}
