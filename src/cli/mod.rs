//! The command line: argument definitions, command wiring, and rendering.

pub mod args;
pub mod doctor;
pub mod render;
pub mod run;
pub mod signing;
