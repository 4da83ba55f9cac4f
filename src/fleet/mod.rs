//! The fleet: the same stacks, pushed as per-host unit sets over SSH, each peer's own systemd
//! doing the running (see docs/fleet-protocol.md).
//!
//! Two sides that share only the wire format, [`protocol`]: the [`controller`] (reads
//! `fleet.toml`, places services, renders each host's set, pushes it over SSH, and the
//! federation daemon that keeps doing so) and the [`peer`] (`kapell receive`: checks a pushed
//! set, keeps it as a generation under `/etc/kapell/received`, and makes systemd run it). Neither
//! side imports the other (`tests/layering.rs`).

pub mod controller;
pub mod peer;
pub mod protocol;
