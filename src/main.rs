//! The `p8hsm` command: parse → run → exit code.

mod agent;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    match cli::run::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::render::error(&error),
    }
}
