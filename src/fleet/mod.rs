//! The fleet (SPEC §8): the same stacks, pushed as per-host unit sets over SSH, each peer's own
//! systemd doing the running.
//!
//! On the controller: [`config`] reads `fleet.toml`, [`placement`] decides which services each
//! host runs, [`controller`] renders each host's set (with the renderer the generator uses) and
//! talks to every host in parallel over [`ssh`], the one transport. On a peer: [`receive`]
//! answers one [`protocol`] request, installs sets as generations under `/etc/kapell/received`
//! ([`received`]), and makes systemd run them with `kapell apply`'s plan and execution.

pub mod config;
pub mod controller;
pub mod converge;
pub mod federate;
pub mod placement;
pub mod protocol;
pub mod receive;
pub mod received;
pub mod rollout;
pub mod ssh;
pub mod state;
