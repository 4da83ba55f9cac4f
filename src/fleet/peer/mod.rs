//! The peer side of the fleet: `kapell receive`, the only command a controller runs on a host
//! (see docs/fleet-protocol.md). It answers one [`super::protocol`] request, keeps received sets
//! as [`generations`] under `/etc/kapell/received`, and makes systemd run them with
//! `kapell apply`'s plan and execution.

pub mod generations;
pub mod receive;
