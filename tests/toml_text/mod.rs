//! Writing stack files from tests: any string as a TOML string, quoted by the TOML library
//! (toml_edit), never by hand.

/// A TOML string value holding exactly `s`.
pub fn string(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}
