//! `p8hsm agent`: logs in once, then hands out tokens to local clients over a unix
//! socket (the protocol is the library's [`p8hsm::protocol`]), from the token cache when
//! it can and from the session pool when it must; checks every peer's uid, audits every
//! token it hands out, and rides out HSM outages.
//!
//! - [`daemon`]: the socket's private directory, and starting in the background;
//! - [`server`]: the listener, its connections and their limits;
//! - [`audit`]: the audit and event lines.
//!
//! The agent takes the library's types (a token to open, a PIN already read) and never
//! the command line's: the CLI and the agent do not import each other.

mod daemon;
mod server;

use std::path::PathBuf;

use p8hsm::pkcs11::{FoundToken, TokenLocation};
use p8hsm::KeyId;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use crate::audit::LogFormat;
use crate::failure::Failure;

/// `p8hsm agent`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The socket [default: $XDG_RUNTIME_DIR/p8hsm/agent.sock, else
    /// /tmp/p8hsm-<uid>/agent.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Stay in the foreground (otherwise the agent detaches and logs to agent.log beside
    /// the socket)
    #[arg(long)]
    pub foreground: bool,
    /// Format of the audit and event lines
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Also serve this uid (repeatable; by default only the agent's own uid)
    #[arg(long, value_name = "UID")]
    pub allow_uid: Vec<u32>,
    /// Also serve peers of this gid (repeatable)
    #[arg(long, value_name = "GID")]
    pub allow_gid: Vec<u32>,
    /// Sign only with these keys
    #[arg(long, value_name = "ID,…", value_delimiter = ',', value_parser = |s: &str| s.parse::<KeyId>())]
    pub keys: Vec<KeyId>,
    /// Append audit lines to this file (created with mode 0600) instead of stderr
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Put the whole token in each audit line (off: the claims' SHA-256 only)
    #[arg(long)]
    pub audit_tokens: bool,
    /// Started by a parent `p8hsm agent`: read the token to open and the PIN from
    /// standard input, never from arguments
    #[arg(long, hide = true)]
    pub from_parent: bool,
}

/// What the agent runs with, once its options are resolved; the background agent gets
/// it from its parent, never through its own arguments.
#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    socket: PathBuf,
    log_format: LogFormat,
    allow_uid: Vec<u32>,
    allow_gid: Vec<u32>,
    keys: Vec<KeyId>,
    audit_log: Option<PathBuf>,
    audit_tokens: bool,
}

impl Settings {
    fn new(args: Args) -> Settings {
        Settings {
            socket: daemon::socket_path(args.socket),
            log_format: args.log_format,
            allow_uid: args.allow_uid,
            allow_gid: args.allow_gid,
            keys: args.keys,
            audit_log: args.audit_log,
            audit_tokens: args.audit_tokens,
        }
    }

    /// Whether peers other than the agent's own uid may connect.
    fn shared(&self) -> bool {
        !self.allow_uid.is_empty() || !self.allow_gid.is_empty()
    }
}

/// Starts the agent on the token `found` (in `spec`), logging in with `pin`: here with
/// `--foreground`, else in the background — a copy of this process in its own process
/// group, given the token and the PIN through a pipe, never through its arguments.
/// The caller has made the process non-dumpable before it read the PIN;
/// `pin_variable` names the environment variable it read the PIN from, if it did, which
/// the background agent does not inherit.
pub fn run(
    args: Args,
    spec: TokenLocation,
    found: FoundToken,
    pin: SecretString,
    pin_variable: Option<String>,
) -> Result<(), Failure> {
    let foreground = args.foreground;
    let settings = Settings::new(args);
    if foreground {
        return server::serve(&settings, found.login(pin)?);
    }
    drop(found);
    daemon::spawn(&settings, &spec, pin, pin_variable.as_deref())
}

/// The background agent: what its parent sent on standard input.
pub fn run_from_parent() -> Result<(), Failure> {
    crate::audit::not_dumpable();
    let (settings, spec, pin) = daemon::read_parent()?;
    let token = p8hsm::Token::open(&spec, pin)?;
    server::serve(&settings, token)
}
