//! Reading stack files: TOML with spans → checked [`crate::model::Stack`]s.

pub mod reader;
mod service;
mod stack;
pub mod syntax;

pub use stack::parse_stack;
