//! kapell: service graphs in TOML become ordinary systemd units.
//!
//! The pipeline (SPEC §2): [`config`] parses stack files with spans, [`validate`] checks a host's
//! stacks together, [`model`] is the checked result, [`render`] turns it into unit files (pure),
//! [`unitset`] writes them, and [`generator`] is what systemd runs at boot and daemon-reload.

pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod generator;
pub mod model;
pub mod render;
pub mod units;
pub mod unitset;
pub mod validate;
