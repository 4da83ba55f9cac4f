//! The peer side of the fleet: `kapell receive`, the only command a controller runs on a host
//! (see docs/fleet-protocol.md). It shares only [`super::protocol`] with the controller.
//!
//! | module | job |
//! |---|---|
//! | [`gate`] | one request in, one reply out: refusals, host lock, dispatch |
//! | [`lifecycle`] | install, confirm, revert: the state machine of received sets |
//! | [`set_check`] | what a pushed set must be before anything changes |
//! | [`generations`] | the sets on disk under `/etc/kapell/received`, swapped atomically |
//! | [`activate`] | makes systemd run a set (`kapell apply`'s plan and execution) |
//! | [`drift`] | puts back what was changed by hand to the set's units |
//! | [`revert_timer`] | the systemd timer that reverts an unconfirmed set |
//! | [`request`] | the request read strictly: size, version, shape |
//! | [`report`] | the reply's account of what the host runs now |
//! | [`refusal`] | the refusals a reply flags for the controller to act on |
//! | [`journal`] | the last journal lines of failing units |

pub mod activate;
pub mod drift;
pub mod gate;
pub mod generations;
pub mod journal;
pub mod lifecycle;
pub mod refusal;
pub mod report;
pub mod request;
pub mod revert_timer;
pub mod set_check;
