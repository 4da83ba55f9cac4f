pub mod config;
pub mod diagnostics;
pub mod model;
pub mod render;
pub mod units;
