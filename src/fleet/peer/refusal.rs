//! The refusals a reply flags: requests the peer refused without changing anything, of a kind
//! the controller acts on (it sends the whole set; it holds the host on its own). Any other error
//! fails the request as it stands.

use crate::fleet::protocol::Reply;

/// What the controller does about a refusal, by its flag in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request named what this host does not hold (a repair's set, an install's left-out
    /// catalog): the controller sends the whole set ([`Reply::needs_whole_set`]).
    NeedsWholeSet,
    /// The host runs a set this controller did not push (edited by hand, another controller's):
    /// a rollout holds the host on its own ([`Reply::foreign_set`]).
    ForeignSet,
}

/// A refusal, with the sentence the reply's `error` carries.
#[derive(Debug)]
pub struct Refusal {
    kind: Kind,
    why: String,
}

impl Refusal {
    pub fn new(kind: Kind, why: String) -> Self {
        Refusal { kind, why }
    }

    /// The kind of refusal `error` is (through any context added to it), if it is one.
    pub fn kind_of(error: &anyhow::Error) -> Option<Kind> {
        error.downcast_ref::<Refusal>().map(|r| r.kind)
    }

    /// Sets the flag of `error`'s kind in `reply`, and only that one.
    pub fn flag(error: &anyhow::Error, reply: &mut Reply) {
        let kind = Refusal::kind_of(error);
        reply.needs_whole_set = kind == Some(Kind::NeedsWholeSet);
        reply.foreign_set = kind == Some(Kind::ForeignSet);
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Refusal {}
