//! The command line: argument definitions, command wiring, and rendering.

pub mod args;
pub mod render;
pub mod run;
