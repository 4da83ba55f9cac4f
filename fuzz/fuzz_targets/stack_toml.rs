//! Any bytes as a stack file:
//! - kapell's TOML tree is the `toml` crate's tree of the same text, spans included, and it
//!   finds errors exactly where the `toml` crate does (src/config/document/reference.rs, the
//!   reference the unit tests use too);
//! - reading the stack and the host-wide checks never panic, and every diagnostic prints (its
//!   line and column are worked out from the text);
//! - a stack they accept renders units that read back as unit files.
//!
//! Nothing may panic, overflow the stack or run away (libFuzzer's -timeout and -rss_limit_mb catch
//! the last two).
#![no_main]

use kapell::config::document::{Spanned, Table, Value, parse};
use kapell::render::{self, OutputFile, RenderOptions};
use kapell::unitfile::UnitFile;
use kapell::validate::{UnitSearchPath, check_host};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[path = "../../src/config/document/reference.rs"]
mod reference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(difference) = reference::check_against_toml(text) {
        panic!("{difference}");
    }
    let parsed = kapell::config::parse_stack(Path::new("/etc/kapell/fuzz.toml"), text);
    let checked = check_host(vec![parsed], &UnitSearchPath::new(Vec::new()));
    for diagnostic in &checked.diagnostics {
        let _ = diagnostic.to_string();
    }
    if !checked.is_ok() {
        return;
    }
    for file in render::render_host(&checked.stacks, &RenderOptions::default()) {
        if let OutputFile::Unit { name, text } = &file {
            if let Err(e) = UnitFile::parse(text) {
                panic!("{name} does not read back: {e}\n{text}");
            }
        }
    }
});
