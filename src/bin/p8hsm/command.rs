//! The command line composed from its front ends — the one-shot commands (`cli`), the
//! agent (`agent`) and the service (`serve`) — over the shared settings; each command
//! run, and its failure reported.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::failure::{self, Failure};
use crate::settings::{Config, Global, PinSource};
use crate::{agent, audit, cli, serve};

/// Sign Apple API tokens with a .p8 key kept inside a PKCS#11 token.
#[derive(Debug, Parser)]
#[command(name = "p8hsm", version, about, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    OneShot(cli::Command),
    /// Log in once and hand out tokens to local clients over a unix socket
    Agent(agent::Args),
    /// Serve tokens to a fleet over HTTPS with client certificates and a policy
    Serve(serve::Args),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (p8hsm.1 and one per command) into DIR
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

/// Parses the command line, runs the command, and says how it went: the exit status.
pub fn main() -> ExitCode {
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
        (clap::error::ErrorKind::ValueValidation, Some(refused)) => Failure::Option {
            message: refused.to_string(),
            hint: crate::remedy::remedy(refused, crate::remedy::Audience::CommandLine),
        }
        .report(),
        _ => e.exit(),
    }
}

fn run(global: Global, command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent(args) if args.from_parent => agent::run_from_parent(),
        Command::Agent(args) => {
            // Nothing that will hold a PIN may dump core: made so before it reads one.
            audit::not_dumpable();
            let config = Config::resolve(global)?;
            let (found, pin) = config.find()?;
            let pin_variable = match config.pin_source()? {
                PinSource::Env(name) => Some(name),
                _ => None,
            };
            agent::run(args, config.spec()?, found, pin, pin_variable)
        }
        Command::OneShot(command) => cli::run(&Config::resolve(global)?, command),
        Command::Serve(args) => {
            audit::not_dumpable();
            let config = Config::resolve(global)?;
            let (found, pin) = config.find()?;
            serve::run(args, found.login(pin)?)
        }
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "p8hsm", &mut out);
            failure::print(&String::from_utf8_lossy(&out))
        }
        Command::Man { dir } => man_pages(&dir),
    }
}

/// Writes `p8hsm.1` and `p8hsm-COMMAND.1` for each (sub)command that is shown.
fn man_pages(dir: &std::path::Path) -> Result<(), Failure> {
    fn write(dir: &std::path::Path, name: &str, cmd: &clap::Command) -> Result<(), Failure> {
        let failed = |source| Failure::Write {
            path: dir.join(format!("{name}.1")),
            source,
        };
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone().name(name.to_owned()))
            .render(&mut page)
            .map_err(failed)?;
        std::fs::write(dir.join(format!("{name}.1")), page).map_err(failed)?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            write(dir, &format!("{name}-{}", sub.get_name()), sub)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command();
    cmd.build();
    write(dir, "p8hsm", &cmd)
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
