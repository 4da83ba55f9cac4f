//! The controller side of the fleet: from `fleet.toml` and the stacks to one unit set per host,
//! pushed over SSH and kept converged (see docs/fleet-protocol.md).
//!
//! [`config`] reads `fleet.toml`, [`placement`] decides which services each host runs, and
//! [`hosts`] renders each host's set (with the renderer the generator uses, and the discovery
//! catalog of [`catalogs`]) and sends requests to every host in parallel over [`ssh`], the one
//! transport. [`converge`] is one pass that brings hosts to their sets, shared by `kapell fleet
//! apply` and the [`federate`] daemon. It carries out the decisions of [`rollout`] (canaries,
//! batches, a failed desired state held back); [`batch`] pushes, watches and confirms each batch
//! host by host, with [`gate`] judging health; both send each host its requests and keep their
//! [`outcomes`]. [`instance_health`] is the health of the
//! instances no responder probes that every install carries; [`state`] is what the controller
//! remembers between runs.

pub mod batch;
pub mod catalogs;
pub mod config;
pub mod converge;
pub mod federate;
pub mod gate;
pub mod hosts;
pub mod instance_health;
pub mod outcomes;
pub mod placement;
pub mod rollout;
pub mod ssh;
pub mod state;

pub use hosts::{Controller, HostResult};
