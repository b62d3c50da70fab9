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
        _ => match kind_missing(std::env::args().skip(1)) {
            Some(failure) => failure.report(),
            None => e.exit(),
        },
    }
}

/// `p8hsm token` or `p8hsm sign` without a kind of its own first — the kind forgotten
/// (`token --key-id X`) or one of the other command's (`token promo-offer`) — said so,
/// with the kinds that would do (clap would suggest a similar option or nothing).
fn kind_missing(args: impl Iterator<Item = String>) -> Option<Failure> {
    use p8hsm::apple::spec::Family;
    use p8hsm::apple::Kind;
    const TAKE_VALUES: &[&str] = &[
        "--module",
        "--module-args",
        "--token",
        "--key",
        "--pin-source",
        "--profile",
    ];
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if TAKE_VALUES.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        let family = match arg.as_str() {
            "token" => Family::Token,
            "sign" => Family::Signature,
            _ => return None,
        };
        let kinds = |family: Family| -> Vec<&'static str> {
            Kind::ALL
                .iter()
                .filter(|k| k.spec().family == family)
                .map(|k| k.name())
                .collect()
        };
        let next = args.next().unwrap_or_default();
        if kinds(family).contains(&next.as_str()) {
            return None;
        }
        let other = match family {
            Family::Token => Family::Signature,
            Family::Signature => Family::Token,
        };
        if kinds(other).contains(&next.as_str()) {
            return Some(Failure::Option {
                message: format!(
                    "{next} is made by `p8hsm {} {next}`, not `p8hsm {arg}`",
                    other.command()
                ),
                hint: None,
            });
        }
        if next == "help" || next == "--help" || next == "-h" {
            return None;
        }
        let message = if next.is_empty() || next.starts_with('-') {
            format!("`p8hsm {arg}` needs the kind first: `p8hsm {arg} KIND --key-id …`")
        } else {
            let shown: String = next.chars().take(64).collect();
            format!("unknown kind \"{}\"", shown.escape_debug())
        };
        return Some(Failure::Option {
            message,
            hint: Some(format!("hint: the kinds are {}", kinds(family).join(", "))),
        });
    }
    None
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
