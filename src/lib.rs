//! kapell: service graphs in TOML become ordinary systemd units.
//!
//! The pipeline (see docs/architecture.md): [`config`] parses stack files with spans,
//! [`validate`] checks a host's stacks together, [`model`] is the checked result, [`render`]
//! turns it into unit files (pure), [`unitset`] writes them, and [`generator`] is what systemd
//! runs at boot and daemon-reload. [`host_units`] says what a host runs: its own stacks and the
//! set a fleet controller installed ([`received_sets`]), local units winning. On one host,
//! [`apply`] makes systemd run them through [`systemd`] (D-Bus), and [`status`] reports what
//! systemd says about them; [`fleet`] pushes per-host sets from a controller to its peers.

pub mod apply;
pub mod atomic_file;
pub mod blocking;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnostics;
pub mod discovery;
pub mod dns_state;
pub mod exit;
pub mod fleet;
pub mod generator;
pub mod health;
pub mod host;
pub mod host_units;
pub mod import;
pub mod lock;
pub mod logging;
mod lookups;
pub mod model;
pub mod names;
pub mod parallel;
pub mod ports;
pub mod printable;
pub mod quantity;
pub mod received_sets;
pub mod render;
#[cfg(test)]
mod scaling;
pub mod status;
pub mod supervisor;
pub mod systemd;
pub mod unitfile;
pub mod unitset;
pub mod validate;
