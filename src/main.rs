//! The `p8hsm` command: parse → run → exit status. The command line is composed here
//! from its front ends — the one-shot commands (`cli`) and the agent (`agent`) — which
//! share only the binary's error type (`failure`) and never import each other.

mod agent;
mod cli;
mod failure;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use failure::Failure;

/// Sign Apple API tokens with a .p8 key kept inside a PKCS#11 token.
#[derive(Debug, Parser)]
#[command(name = "p8hsm", version, about, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    OneShot(cli::Command),
    /// Log in once and hand out tokens to local clients over a unix socket
    Agent(agent::Args),
}

fn main() -> ExitCode {
    let Cli { global, command } = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused_while_parsing(e),
    };
    let code = match run(global, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    };
    pause_for_inspection();
    code
}

/// A value one of p8hsm's own parsers refused (an ID, a scope, a profile…) is reported
/// as every failure is: one `error:` line, its control characters escaped (clap would
/// print the value as it came, newlines and all). Anything else is clap's to say.
fn refused_while_parsing(e: clap::Error) -> ExitCode {
    let ours = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<p8hsm::Error>());
    match (e.kind(), ours) {
        (clap::error::ErrorKind::ValueValidation, Some(refused)) => {
            Failure::Usage(refused.to_string()).report()
        }
        _ => e.exit(),
    }
}

fn run(global: cli::Global, command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent(args) if args.from_parent => agent::run_from_parent(),
        Command::Agent(args) => {
            let config = cli::Config::resolve(global)?;
            let (found, pin) = config.find()?;
            agent::run(args, config.spec()?, found, pin)
        }
        Command::OneShot(command) => cli::run(&cli::Config::resolve(global)?, command),
    }
}

/// Test builds only (`fault-injection`): with `P8HSM_PAUSE_BEFORE_EXIT` set, the process
/// says so on stderr and waits — for its stdin to close (`1`), or for the file the
/// variable names to appear (when stdin was the command's input) — so a test can scan
/// its memory after the command has done its work.
#[cfg(feature = "fault-injection")]
fn pause_for_inspection() {
    let Some(until) = std::env::var_os("P8HSM_PAUSE_BEFORE_EXIT") else {
        return;
    };
    eprintln!("paused before exit");
    if until == "1" {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    } else {
        while !std::path::Path::new(&until).exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
fn pause_for_inspection() {}
