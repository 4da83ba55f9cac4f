//! Any bytes as a stack file:
//! - kapell's TOML tree is the `toml` crate's tree of the same text, spans included, and it
//!   finds errors exactly where the `toml` crate does (src/config/document/reference.rs, the
//!   reference the unit tests use too);
//! - reading the stack and the host-wide checks never panic, and every diagnostic prints (its
//!   line and column are worked out from the text);
//! - a stack they accept renders units that read back as unit files;
//! - a file made large enough to be parsed in pieces (src/config/pieces.rs), by a comment after
//!   its last line, says what the file says: the same diagnostics, the same units;
//! - read as a `fleet.toml` (the same TOML tree, another schema), it never panics either, and its
//!   diagnostics print.
//!
//! Nothing may panic, overflow the stack or run away (libFuzzer's -timeout and -rss_limit_mb catch
//! the last two).
#![no_main]

use kapell::config::document::{Spanned, Table, Value, parse};
use kapell::config::{PIECES_FROM_BYTES, parse_stack};
use kapell::render::{self, OutputFile, RenderOptions};
use kapell::unitfile::UnitFile;
use kapell::validate::{UnitSearchPath, check_host};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[path = "../../src/config/document/reference.rs"]
mod reference;

/// What a stack file says: every diagnostic as printed, and the units it renders to if the
/// host-wide checks accept it.
fn read(text: &str) -> (Vec<String>, Option<Vec<OutputFile>>) {
    let parsed = parse_stack(Path::new("/etc/kapell/fuzz.toml"), text);
    let checked = check_host(vec![parsed], &UnitSearchPath::new(Vec::new()));
    let diagnostics = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    let units = checked.is_ok().then(|| render::render_host(&checked.stacks, &RenderOptions::default()));
    (diagnostics, units)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(difference) = reference::check_against_toml(text) {
        panic!("{difference}");
    }
    if let Err(problems) = kapell::fleet::controller::config::parse(Path::new("/etc/kapell/fleet.toml"), text) {
        for problem in &problems {
            let _ = problem.to_string();
        }
    }
    let (diagnostics, units) = read(text);
    for file in units.iter().flatten() {
        if let OutputFile::Unit { name, text } = file
            && let Err(e) = UnitFile::parse(text)
        {
            panic!("{name} does not read back: {e}\n{text}");
        }
    }
    // Only for good TOML: a comment cannot be appended to a file that ends inside a string.
    if parse(text).1.is_empty() {
        let padded = format!("{text}\n#{}\n", " ".repeat(PIECES_FROM_BYTES));
        let (padded_diagnostics, padded_units) = read(&padded);
        assert_eq!(diagnostics, padded_diagnostics, "read in pieces, the file says otherwise");
        assert_eq!(units, padded_units, "read in pieces, the file renders otherwise");
    }
});
