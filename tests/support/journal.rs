//! Journal entries as the tests look at them (`journalctl -o json`), to find a unit's events by
//! `MESSAGE_ID` and to order them by time.

use anyhow::{Context, Result};

/// One journal entry.
#[derive(Debug)]
pub struct Entry {
    /// `__MONOTONIC_TIMESTAMP`, µs.
    pub mono: u64,
    pub priority: u8,
    pub identifier: String,
    pub message: String,
    pub message_id: String,
}

impl Entry {
    pub fn parse(line: &str) -> Result<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("journal line {line}"))?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok(Entry {
            mono: text("__MONOTONIC_TIMESTAMP").parse().unwrap_or_default(),
            priority: text("PRIORITY").parse().unwrap_or(6),
            identifier: text("SYSLOG_IDENTIFIER"),
            message: text("MESSAGE"),
            message_id: text("MESSAGE_ID"),
        })
    }

    /// The time of the first entry with `message_id` from `after` (µs) on.
    pub fn find(entries: &[Entry], message_id: &str, after: u64) -> Option<u64> {
        entries.iter().find(|e| e.message_id == message_id && e.mono >= after).map(|e| e.mono)
    }

    /// Every entry as one line, for error messages.
    pub fn lines(entries: &[Entry]) -> String {
        entries
            .iter()
            .map(|e| format!("{} [{}] {}: {}", e.mono, e.priority, e.identifier, e.message))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
