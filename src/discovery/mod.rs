//! Discovery: `<service>.<stack>.kapell` names that resolve, on every host, to the hosts where
//! the service runs and is healthy (see docs/discovery.md).
//!
//! [`catalog`] is the data (what a host's pushed set carries, or what the local stacks give);
//! [`health`] decides which instances count ([`pushed_health`]: the controller's word on those
//! no responder can probe); [`table`] turns both into ready records;
//! [`server`] is the DNS handler on hickory-server ([`access`] says who may ask, [`upstream`]
//! where other names go); [`resolved`] routes the domain for the host's own processes (through [`link`], a link of
//! kapell's own);
//! [`daemon`] is `kapell dns`, which keeps all of it current.

pub mod access;
pub mod catalog;
pub mod daemon;
pub mod health;
pub mod link;
pub mod pushed_health;
pub mod resolved;
pub mod server;
pub mod table;
pub mod upstream;
