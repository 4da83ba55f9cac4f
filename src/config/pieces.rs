//! Large stack files are parsed in pieces, in parallel.
//!
//! The `toml` crate reads a document whole, on one thread, and holds a token vector about ten
//! times the size of the text while it builds the tree: one stack of 10,000 services was a
//! serial parse of 3 MB and most of the generator's peak memory. A stack file is mostly a run of
//! `[services.NAME]` tables, and each of those is a complete TOML document on its own; so a
//! large file is cut at those headers into pieces that are parsed (and read) in parallel, each
//! tree dropped as soon as its services are read.
//!
//! The cut is found by looking at line starts only, so it can be fooled (a header-like line
//! inside a multi-line string, a header written in a form the scan does not know). It is used
//! only when it provably means what the whole file means — the caller checks this, and parses
//! the file whole otherwise, with the whole file's own error messages:
//! - every piece, the text before the first service and the text after the last one each parse
//!   on their own without an error (a cut inside a string, array or inline table leaves the
//!   part before it unterminated, which is an error);
//! - each piece defines exactly the services whose headers the scan found in it, and the stack's
//!   own keys (before and after the services) define no service;
//! - no service is defined in two pieces.
//!
//! Complete documents that start with a table header mean, concatenated, the union of their
//! tables; under those checks that is exactly what the whole file means.

use std::ops::Range;

/// Files smaller than this are parsed whole: a piece's own start-up would cost more than the
/// parallel parse saves, and a host with many small stacks parses its files in parallel anyway.
pub const FROM_BYTES: usize = 32 * 1024;

/// Pieces are about this large (or smaller, to give every core several of them).
const PIECE_BYTES: usize = 64 * 1024;

/// At least this many pieces, so that the parallel map spreads them over every core.
const MIN_PIECES: usize = 16;

/// Where a stack file is cut.
#[derive(Debug, PartialEq)]
pub struct Cut<'t> {
    /// The text before the first `[services.NAME]` header: the stack's own keys.
    pub head: Range<usize>,
    /// The text after the last service, from the first other table header on (`[secrets.x]`),
    /// or an empty range at the end.
    pub tail: Range<usize>,
    /// The services, in file order, in pieces of whole `[services.NAME]` tables.
    pub pieces: Vec<Piece<'t>>,
}

/// A run of whole `[services.NAME]` tables (each header with the lines up to the next one).
#[derive(Debug, PartialEq)]
pub struct Piece<'t> {
    pub range: Range<usize>,
    /// The names of the `[services.NAME]` headers the piece starts its tables with, in order.
    pub names: Vec<&'t str>,
}

/// What a line that opens a table says, as far as cutting is concerned.
#[derive(Debug, PartialEq)]
enum Header<'t> {
    /// `[services.NAME]`, NAME a bare key.
    Service(&'t str),
    /// `[services.NAME.more]`, `[[…]]`, or a header the scan does not read (quoted keys,
    /// blanks): stays in the piece it is in (the piece's checks decide whether that is fine).
    Inner,
    /// Any other table of bare keys (`[secrets.token]`, `[services]`): the stack's own.
    Other,
}

/// The cut of `text`, or `None` when it is small or has no shape to cut along (no service
/// header, or a table of the stack's own between two services).
pub fn cut(text: &str) -> Option<Cut<'_>> {
    if text.len() < FROM_BYTES {
        return None;
    }
    let mut services: Vec<(usize, &str)> = Vec::new();
    let mut tail_start = None;
    // Only a line that starts with `[` can be a header: go from one such line to the next (a
    // SIMD substring search, about ten times `str::match_indices` here) rather than through
    // every line of the file.
    let bracket_lines = memchr::memmem::find_iter(text.as_bytes(), b"\n[").map(|i| i + 1);
    for line_start in text.starts_with('[').then_some(0).into_iter().chain(bracket_lines) {
        let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i + 1);
        let line = &text[line_start..line_end];
        match header(line) {
            Some(Header::Service(name)) if tail_start.is_none() => services.push((line_start, name)),
            // A service after the stack's own tables: not a shape worth cutting.
            Some(Header::Service(_)) => return None,
            Some(Header::Other) if !services.is_empty() && tail_start.is_none() => tail_start = Some(line_start),
            _ => {}
        }
    }
    let first = services.first()?.0;
    let end = tail_start.unwrap_or(text.len());
    let target = ((end - first) / MIN_PIECES).clamp(1, PIECE_BYTES);
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, &(start, name)) in services.iter().enumerate() {
        match pieces.last_mut() {
            Some(piece) if start - piece.range.start < target => piece.names.push(name),
            _ => pieces.push(Piece { range: start..start, names: vec![name] }),
        }
        let next = services.get(i + 1).map_or(end, |s| s.0);
        pieces.last_mut().expect("just pushed").range.end = next;
    }
    Some(Cut { head: 0..first, tail: end..text.len(), pieces })
}

/// Reads a line as a table header, if it is one. Only the forms the scan reads exactly are
/// told apart; everything else that starts with `[` is [`Header::Inner`].
fn header(line: &str) -> Option<Header<'_>> {
    let rest = line.strip_prefix('[')?;
    if rest.starts_with('[') {
        return Some(Header::Inner);
    }
    let Some((path, after)) = rest.split_once(']') else { return Some(Header::Inner) };
    let after = after.trim_start_matches([' ', '\t']);
    let ends_line = after.is_empty() || after.starts_with(['#', '\n']) || after.starts_with("\r\n");
    let bare = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let keys: Vec<&str> = path.split('.').collect();
    if !ends_line || !keys.iter().all(|k| bare(k)) {
        return Some(Header::Inner);
    }
    Some(match keys.as_slice() {
        ["services", name] => Header::Service(name),
        ["services", _, ..] => Header::Inner,
        _ => Header::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(services: usize, tail: &str) -> String {
        let mut text = String::from("description = \"d\"\n");
        for i in 0..services {
            text.push_str(&format!("\n[services.s{i}]\nexec = [\"/bin/true\", \"{}\"]\n", "x".repeat(40)));
        }
        text + tail
    }

    #[test]
    fn headers() {
        assert_eq!(header("[services.web]\n"), Some(Header::Service("web")));
        assert_eq!(header("[services.web]  # the front\r\n"), Some(Header::Service("web")));
        assert_eq!(header("[services.web.systemd]\n"), Some(Header::Inner));
        assert_eq!(header("[services.\"a b\"]\n"), Some(Header::Inner));
        assert_eq!(header("[[services.web]]\n"), Some(Header::Inner));
        assert_eq!(header("[services.web] x = 1\n"), Some(Header::Inner));
        assert_eq!(header("[secrets.token]\n"), Some(Header::Other));
        assert_eq!(header("[services]\n"), Some(Header::Other));
        assert_eq!(header(" [services.web]\n"), None);
        assert_eq!(header("exec = []\n"), None);
    }

    #[test]
    fn cuts_at_service_headers_and_keeps_every_byte() {
        let text = big(1000, "\n[secrets.token]\nfile = \"/x\"\n");
        let cut = cut(&text).expect("a cut");
        assert_eq!(cut.head, 0..text.find("\n[services.s0]").expect("s0") + 1);
        assert_eq!(&text[cut.tail.clone()], "[secrets.token]\nfile = \"/x\"\n");
        assert!(cut.pieces.len() >= MIN_PIECES, "{} pieces", cut.pieces.len());
        let mut at = cut.head.end;
        let mut names = Vec::new();
        for piece in &cut.pieces {
            assert_eq!(piece.range.start, at, "pieces are contiguous");
            assert!(text[piece.range.clone()].starts_with(&format!("[services.{}]", piece.names[0])));
            at = piece.range.end;
            names.extend(piece.names.iter().copied());
        }
        assert_eq!(at, cut.tail.start);
        assert_eq!(names, (0..1000).map(|i| format!("s{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn a_file_that_opens_with_a_service_and_crlf_lines_is_cut_too() {
        let text = big(1000, "").replace("description = \"d\"\n\n", "").replace('\n', "\r\n");
        let cut = cut(&text).expect("a cut");
        assert_eq!(cut.head, 0..0, "no stack keys before the first service");
        assert_eq!(cut.pieces[0].names[0], "s0");
        assert_eq!(cut.pieces.iter().map(|p| p.names.len()).sum::<usize>(), 1000);
        assert_eq!(cut.pieces.last().expect("pieces").range.end, text.len());
    }

    #[test]
    fn no_cut_for_small_files_or_tables_between_services() {
        assert_eq!(cut(&big(10, "")), None);
        let mut text = big(1000, "[secrets.token]\nfile = \"/x\"\n");
        text.push_str("[services.late]\nexec = [\"/bin/true\"]\n");
        assert_eq!(cut(&text), None);
    }
}
