//! The `p8hsm` command: parse → run → exit status. Its front ends — the one-shot commands
//! (`cli`), the agent (`agent`) and the service (`serve`) — share only the settings that
//! find a token (`settings`), the binary's failures (`failure`), input helpers (`input`)
//! and the long-lived front ends' audit lines (`audit`), and never import each other.

#![forbid(unsafe_code)]

mod agent;
mod audit;
mod cli;
mod command;
mod failure;
mod input;
mod remedy;
mod serve;
mod settings;

fn main() -> std::process::ExitCode {
    command::main()
}
