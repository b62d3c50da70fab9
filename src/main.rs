//! The `p8hsm` command: parse → run → exit code.

mod agent;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    let code = match cli::run::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => cli::render::error(&error),
    };
    pause_for_inspection();
    code
}

/// Test builds only (`fault-injection`): with `P8HSM_PAUSE_BEFORE_EXIT` set, the process
/// says so on stderr and waits for its stdin to close, so a test can scan its memory
/// after the command has done its work.
#[cfg(feature = "fault-injection")]
fn pause_for_inspection() {
    if std::env::var_os("P8HSM_PAUSE_BEFORE_EXIT").is_some() {
        eprintln!("paused before exit");
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    }
}

#[cfg(not(feature = "fault-injection"))]
fn pause_for_inspection() {}
