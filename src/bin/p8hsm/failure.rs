//! The binary's own failures: the library's
//! errors and the cases only the binary meets — files, PIN sources, the agent's peers
//! and socket, `check` and `doctor` findings, output. Each renders one `error:` line and
//! its hint together, and maps to one protocol code and one exit status, through
//! exhaustive matches. Shared by every front end; imports none of them.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use p8hsm::protocol::ErrorBody;
use p8hsm::{Error, ErrorCode, KeyId};

use crate::remedy::{remedy, Audience};

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The library refused or failed.
    P8hsm(Error),
    /// The command was used wrongly in a way clap cannot see.
    Usage(String),
    /// A value given to an option was refused as the options were read.
    Option {
        /// What was refused.
        message: String,
        /// What to do.
        hint: Option<String>,
    },
    /// An input file could not be read.
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key ID given and the one in Apple's file name differ.
    KeyIdMismatch {
        /// From `--key-id`.
        given: KeyId,
        /// From `AuthKey_<ID>.p8`.
        in_name: KeyId,
    },
    /// No key ID was given and none could be inferred.
    KeyIdUnknown,
    /// The PIN source could not give a PIN.
    PinSource(String),
    /// The agent is restricted to other keys.
    KeyNotAllowed(KeyId),
    /// A peer of a uid the agent does not serve.
    Forbidden {
        /// The peer's uid.
        uid: u32,
    },
    /// The agent serves as many connections as it may.
    Busy,
    /// A request line over the limit.
    TooLarge(usize),
    /// The audit line could not be written, so nothing was handed out.
    AuditFailed(io::Error),
    /// The agent could not be started.
    AgentSetup(String),
    /// An agent already listens on the socket.
    AgentRunning(PathBuf),
    /// The background agent failed before it listened: its `error:` line, the line after
    /// it (a hint or warning), and its exit status, as it said them.
    AgentFailed {
        /// Its exit status.
        status: u8,
        /// Its message, without `error: `.
        message: String,
        /// Its next line, whole.
        next: Option<String>,
    },
    /// The service could not be started: a file, the listener, the policy.
    ServeSetup(String),
    /// No caller of the service's policy is named by the client's certificate.
    UnknownCaller(Vec<String>),
    /// The client's certificate, accepted when its connection was made, is no longer
    /// (expired since, or refused by a CRL or client CA read since).
    CertificateRefused(&'static str),
    /// More than one caller of the service's policy is named by the client's certificate.
    AmbiguousCaller {
        /// The certificate's names, as a policy writes them.
        names: Vec<String>,
        /// The callers they name.
        callers: Vec<String>,
    },
    /// The service's policy does not let the caller ask for this.
    NotPermitted {
        /// The caller, as the policy names it.
        caller: String,
        /// What it may not do.
        reason: String,
    },
    /// No agent answers on the socket.
    AgentUnreachable {
        /// `P8HSM_AGENT_SOCK`.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent refused or failed the request.
    Agent(ErrorBody),
    /// `check` found reasons Apple would reject the token.
    Findings(usize),
    /// `doctor` found failing checks.
    Doctor(usize),
    /// stdout could not be written.
    Output(io::Error),
    /// A file p8hsm writes (`--out`) could not be written; what was there is unchanged.
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A key was imported, but what was imported could not be written.
    Unreported {
        /// The key ID.
        key_id: KeyId,
        /// Why.
        source: io::Error,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::P8hsm(e)
    }
}

/// Exit statuses, as `docs/manual.md` documents them.
pub mod exit {
    /// Unexpected failure: a PKCS#11 call failed, output could not be written.
    pub const FAILURE: u8 = 1;
    /// Usage error: bad or missing options.
    pub const USAGE: u8 = 2;
    /// Bad input: key file, IDs, scope, lifetime, request.
    pub const INPUT: u8 = 3;
    /// PIN: wrong, locked, or the PIN source failed.
    pub const PIN: u8 = 4;
    /// Module, token or agent not found, not reachable or unable.
    pub const TOKEN: u8 = 5;
    /// Key not found on the token (or not allowed).
    pub const KEY_NOT_FOUND: u8 = 6;
    /// The key ID is already on the token.
    pub const KEY_EXISTS: u8 = 7;
    /// Import check failed.
    pub const IMPORT_CHECK: u8 = 8;
    /// `check` found reasons Apple would reject the token.
    pub const FINDINGS: u8 = 9;
    /// The key's recorded kind or identity contradicts the command.
    pub const KEY_KIND: u8 = 10;
    /// `doctor` found failing checks.
    pub const DOCTOR: u8 = 11;
    /// The agent or the service could not start: its address or socket, the socket's
    /// directory, its TLS files, policy or audit log.
    pub const SETUP: u8 = 12;
}

/// One class of failure as each front end says it: the protocol's code, the command
/// line's exit status, the service's HTTP status, and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    /// The protocol's code.
    pub code: ErrorCode,
    /// The command line's exit status.
    pub exit: u8,
    /// The service's HTTP status.
    pub http: u16,
    /// What it means: the documentation's table of codes is checked against it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub meaning: &'static str,
}

/// Every class of failure a peer sends, in the order `docs/protocol.md` lists them (its
/// table of codes is checked against this one).
pub const CLASSES: &[Class] = &[
    class(ErrorCode::BadRequest, exit::INPUT, 400, "not a request: not JSON, not an object, an unknown kind, field or version, a value of the wrong type or form"),
    class(ErrorCode::TooLarge, exit::INPUT, 413, "the request is over 65,536 bytes; the agent closes the connection"),
    class(ErrorCode::InvalidInput, exit::INPUT, 400, "a value breaks a rule: lifetime, scope, missing `key_id`, `issuer` or `team_id`, a request body, a clock that cannot be right"),
    class(ErrorCode::Usage, exit::USAGE, 400, "fields that do not apply together (`ttl` on a provider token, `individual` with `issuer`)"),
    class(ErrorCode::PinRefused, exit::PIN, 503, "the token refused the PIN, or it is locked: it is never tried again"),
    class(ErrorCode::TokenUnavailable, exit::TOKEN, 503, "the token went away; it is tried again after 0.1 s, doubling up to 5 s"),
    class(ErrorCode::Unsupported, exit::TOKEN, 501, "the token cannot do what was asked"),
    class(ErrorCode::Forbidden, exit::TOKEN, 403, "the caller may not use the agent (its uid: `--allow-uid`, `--allow-gid`) or the service (no caller of the policy is named by its certificate)"),
    class(ErrorCode::Busy, exit::TOKEN, 429, "every connection is serving a request; try again"),
    class(ErrorCode::KeyNotFound, exit::KEY_NOT_FOUND, 404, "no such key on the token"),
    class(ErrorCode::KeyNotAllowed, exit::KEY_NOT_FOUND, 403, "the caller may not use this key, or ask for this (the agent's `--keys`, the service's policy)"),
    class(ErrorCode::KeyExists, exit::KEY_EXISTS, 409, "the key ID is on the token more than once"),
    class(ErrorCode::ImportFailed, exit::IMPORT_CHECK, 500, "(import only; the agent and the service do not import)"),
    class(ErrorCode::KeyKind, exit::KEY_KIND, 409, "the key's recorded kind or identity contradicts the request"),
    class(ErrorCode::AuditFailed, exit::FAILURE, 500, "the audit line could not be written, so nothing was handed out"),
    class(ErrorCode::Failed, exit::FAILURE, 500, "a PKCS#11 call failed unexpectedly"),
    class(ErrorCode::Internal, exit::FAILURE, 500, "a bug"),
];

/// A code this version does not know (from a newer peer): a failure.
const UNKNOWN: Class = class(
    ErrorCode::Unknown,
    exit::FAILURE,
    500,
    "a code this version does not know",
);

const fn class(code: ErrorCode, exit: u8, http: u16, meaning: &'static str) -> Class {
    Class {
        code,
        exit,
        http,
        meaning,
    }
}

impl Class {
    /// The class of `code`.
    pub fn of(code: ErrorCode) -> &'static Class {
        CLASSES.iter().find(|c| c.code == code).unwrap_or(&UNKNOWN)
    }
}

/// The exit status of a class of failure: the same whether the failure happened here
/// or in the agent.
pub fn exit_status(code: ErrorCode) -> u8 {
    Class::of(code).exit
}

impl Failure {
    /// The class of failure, as the agent's protocol sends it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::P8hsm(e) => e.code(),
            Failure::Agent(body) => body.code,
            Failure::Usage(_) | Failure::Option { .. } => ErrorCode::Usage,
            Failure::File { .. } | Failure::KeyIdMismatch { .. } | Failure::KeyIdUnknown => {
                ErrorCode::InvalidInput
            }
            Failure::PinSource(_) => ErrorCode::PinRefused,
            Failure::KeyNotAllowed(_) | Failure::NotPermitted { .. } => ErrorCode::KeyNotAllowed,
            Failure::UnknownCaller(_)
            | Failure::AmbiguousCaller { .. }
            | Failure::CertificateRefused(_) => ErrorCode::Forbidden,
            Failure::ServeSetup(_) => ErrorCode::InvalidInput,
            Failure::Forbidden { .. } => ErrorCode::Forbidden,
            Failure::Busy => ErrorCode::Busy,
            Failure::TooLarge(_) => ErrorCode::TooLarge,
            Failure::AuditFailed(_) => ErrorCode::AuditFailed,
            Failure::AgentSetup(_)
            | Failure::AgentRunning(_)
            | Failure::AgentFailed { .. }
            | Failure::AgentUnreachable { .. } => ErrorCode::TokenUnavailable,
            Failure::Findings(_)
            | Failure::Doctor(_)
            | Failure::Output(_)
            | Failure::Write { .. }
            | Failure::Unreported { .. } => ErrorCode::Failed,
        }
    }

    /// The exit status.
    pub fn exit_status(&self) -> u8 {
        match self {
            Failure::Findings(_) => exit::FINDINGS,
            Failure::Doctor(_) => exit::DOCTOR,
            Failure::AgentSetup(_) | Failure::AgentRunning(_) | Failure::ServeSetup(_) => {
                exit::SETUP
            }
            Failure::AgentFailed { status, .. } => *status,
            Failure::Output(_) | Failure::Write { .. } | Failure::Unreported { .. } => {
                exit::FAILURE
            }
            Failure::P8hsm(_)
            | Failure::Agent(_)
            | Failure::Usage(_)
            | Failure::Option { .. }
            | Failure::File { .. }
            | Failure::KeyIdMismatch { .. }
            | Failure::KeyIdUnknown
            | Failure::PinSource(_)
            | Failure::KeyNotAllowed(_)
            | Failure::NotPermitted { .. }
            | Failure::UnknownCaller(_)
            | Failure::AmbiguousCaller { .. }
            | Failure::CertificateRefused(_)
            | Failure::Forbidden { .. }
            | Failure::Busy
            | Failure::TooLarge(_)
            | Failure::AuditFailed(_)
            | Failure::AgentUnreachable { .. } => exit_status(self.code()),
        }
    }

    /// What happened, in one line, and what to do about it, said to `to`.
    pub fn message_and_hint(&self, to: Audience) -> (String, Option<String>) {
        let hint = |text: &str| Some(format!("hint: {text}"));
        match self {
            Failure::P8hsm(e) => (e.to_string(), remedy(e, to)),
            Failure::Agent(body) => (body.message.clone(), body.hint.clone()),
            Failure::Usage(message) => (message.clone(), None),
            Failure::Option { message, hint } => (message.clone(), hint.clone()),
            Failure::File { path, source } => {
                let file = match path.to_str() {
                    Some("-") => "standard input".into(),
                    _ => path.display().to_string(),
                };
                let verb = match source.kind() {
                    io::ErrorKind::InvalidData => "use",
                    _ => "read",
                };
                (format!("cannot {verb} {file}: {source}"), None)
            }
            Failure::KeyIdMismatch { given, in_name } => (
                format!("--key-id {given} does not match the key ID {in_name} in the file name"),
                hint("Apple names the file after the key ID; drop --key-id or check the file"),
            ),
            Failure::KeyIdUnknown => (
                "no key ID: the file name is not AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8"
                    .to_owned(),
                hint("pass --key-id ID (App Store Connect shows it next to the key)"),
            ),
            Failure::PinSource(reason) => (
                format!("cannot read the PIN: {reason}"),
                hint("give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)"),
            ),
            Failure::KeyNotAllowed(key_id) => (
                format!("this agent does not sign with key {key_id}"),
                match to {
                    Audience::CommandLine => {
                        hint("the agent was started with --keys; use one of those keys")
                    }
                    Audience::Protocol => hint("this agent signs only with the keys its operator named"),
                },
            ),
            Failure::Forbidden { uid } => (
                format!("uid {uid} may not use this agent"),
                match to {
                    Audience::CommandLine => {
                        hint("start the agent with --allow-uid or --allow-gid to let it")
                    }
                    Audience::Protocol => hint("the agent's operator decides which users may use it"),
                },
            ),
            Failure::Busy => (
                "too many connections are being served".to_owned(),
                hint("try again shortly"),
            ),
            Failure::ServeSetup(reason) => (format!("cannot start the service: {reason}"), None),
            Failure::UnknownCaller(names) => (
                format!(
                    "no caller of the policy is named by the client certificate ({})",
                    if names.is_empty() {
                        "it has no common name or DNS or URI name".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
                hint("add a [[caller]] with one of these names to the policy (a cn: name counts only for a certificate without dns: or uri: names, unless its entry says cn_with_sans = true), then send the service SIGHUP"),
            ),
            Failure::CertificateRefused(why) => (
                format!("{why}; the connection is closed"),
                hint("a new connection with this certificate is refused too: use a certificate the service's CA issued and has not revoked"),
            ),
            Failure::AmbiguousCaller { names, callers } => (
                format!(
                    "the client certificate ({}) names more than one caller of the policy ({})",
                    names.join(", "),
                    callers.join(", ")
                ),
                hint("give each certificate the name of one [[caller]] only"),
            ),
            Failure::NotPermitted { caller, reason } => (
                format!("the policy does not let {caller} {reason}"),
                hint("the caller's [[caller]] entry in the policy lists what it may ask for"),
            ),
            Failure::TooLarge(limit) => (
                format!("a request is one line of at most {limit} bytes"),
                None,
            ),
            Failure::AuditFailed(e) => (
                format!("cannot write the audit line ({e}), so nothing was handed out"),
                hint(
                    "check the audit log's disk and file (a deleted log is opened again on SIGHUP); nothing is handed out that cannot be audited",
                ),
            ),
            Failure::AgentSetup(reason) => (format!("cannot start the agent: {reason}"), None),
            Failure::AgentRunning(socket) => (
                format!("an agent already listens on {}", socket.display()),
                hint(&format!(
                    "use it with P8HSM_AGENT_SOCK={}, or stop it (kill \"$P8HSM_AGENT_PID\" in \
                     the shell that started it) before starting another",
                    shell_word(&socket.to_string_lossy())
                )),
            ),
            Failure::AgentFailed { message, next, .. } => (message.clone(), next.clone()),
            Failure::AgentUnreachable { socket, reason } => (
                format!("cannot reach the agent at {}: {reason}", socket.display()),
                hint("is `p8hsm agent` running? Unset P8HSM_AGENT_SOCK to use the token directly"),
            ),
            Failure::Findings(n) => (
                format!(
                    "Apple would reject this token: {n} problem{} listed above",
                    if *n == 1 { "" } else { "s" }
                ),
                None,
            ),
            Failure::Doctor(n) => (
                format!("{n} check{} failed", if *n == 1 { "" } else { "s" }),
                None,
            ),
            Failure::Output(e) => (format!("cannot write the result: {e}"), None),
            Failure::Write { path, source } => (
                format!("cannot write {}: {source}; what was there is unchanged", path.display()),
                hint("check that the directory exists and that p8hsm may create files in it"),
            ),
            Failure::Unreported { key_id, source } => (
                format!("key {key_id} was imported, but the report of it could not be written: {source}"),
                hint(&format!("`p8hsm keys` shows key {key_id}; do not import it again")),
            ),
        }
    }

    /// What happened, in one line, as the command line says it.
    pub fn message(&self) -> String {
        self.message_and_hint(Audience::CommandLine).0
    }

    /// The error body the agent's protocol and the service send for it.
    pub fn body(&self) -> ErrorBody {
        let (message, hint) = self.message_and_hint(Audience::Protocol);
        ErrorBody {
            code: self.code(),
            message,
            hint,
        }
    }

    /// Prints the failure to stderr — one `error:` line, then its hint line — and
    /// returns its exit status.
    pub fn report(&self) -> ExitCode {
        let (message, hint) = self.message_and_hint(Audience::CommandLine);
        let mut text = format!("error: {}\n", one_line(&message));
        if let Some(hint) = hint {
            text.push_str(&one_line(&hint));
            text.push('\n');
        }
        let _ = io::stderr().lock().write_all(text.as_bytes());
        ExitCode::from(self.exit_status())
    }
}

/// A message on one line: control characters (a newline in a quoted value) escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `s` as one shell word, for the environment the agent and `softhsm init` print to
/// `eval`: as it is when plainly safe, else in single quotes, each `'` written `'\''`.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@%+,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the result to stdout; a closed pipe is not an error.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Output(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_exits_the_same_directly_and_through_the_agent() {
        let failures = [
            Failure::P8hsm(Error::KeyNotFound { key_id: "X".into() }),
            Failure::P8hsm(Error::KeyAmbiguous {
                key_id: "X".into(),
                count: 2,
            }),
            Failure::KeyNotAllowed("2X9R4HXF34".parse().unwrap()),
            Failure::Forbidden { uid: 7 },
            Failure::PinSource("x".into()),
        ];
        for failure in failures {
            let through_agent = Failure::Agent(failure.body());
            assert_eq!(failure.exit_status(), through_agent.exit_status());
            assert_eq!(
                failure.message_and_hint(Audience::Protocol),
                through_agent.message_and_hint(Audience::CommandLine)
            );
        }
    }

    /// Every code there is: the match does not compile unless the list is complete.
    macro_rules! every_code {
        ($($code:ident),* $(,)?) => {{
            fn _complete(code: ErrorCode) {
                match code {
                    $(ErrorCode::$code => {})*
                }
            }
            [$(ErrorCode::$code),*]
        }};
    }

    fn the_codes() -> Vec<ErrorCode> {
        every_code![
            BadRequest,
            TooLarge,
            InvalidInput,
            Usage,
            PinRefused,
            TokenUnavailable,
            Unsupported,
            Forbidden,
            Busy,
            KeyNotFound,
            KeyNotAllowed,
            KeyExists,
            ImportFailed,
            KeyKind,
            AuditFailed,
            Failed,
            Internal,
            Unknown,
        ]
        .to_vec()
    }

    fn doc(name: &str) -> String {
        std::fs::read_to_string(format!("{}/docs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_code_a_peer_sends_has_exactly_one_class() {
        for code in the_codes() {
            let rows = CLASSES.iter().filter(|c| c.code == code).count();
            let expected = usize::from(code != ErrorCode::Unknown);
            assert_eq!(rows, expected, "{code:?}");
        }
        assert_eq!(Class::of(ErrorCode::Unknown).exit, exit::FAILURE);
    }

    /// `docs/protocol.md`'s table of codes is this table, and `docs/manual.md`'s table of
    /// exit statuses lists exactly the statuses the command line exits with.
    #[test]
    fn the_docs_tables_are_the_code_tables() {
        let mut table = String::from(
            "<!-- codes: generated from CLASSES in src/bin/p8hsm/failure.rs -->\n\
             | code | exit | HTTP | meaning |\n|---|---|---|---|\n",
        );
        for class in CLASSES {
            let name = serde_json::to_value(class.code).unwrap();
            table.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                name.as_str().unwrap(),
                class.exit,
                class.http,
                class.meaning
            ));
        }
        table.push_str("<!-- end of codes -->");
        let protocol = doc("protocol.md");
        assert!(
            protocol.contains(&table),
            "docs/protocol.md's table of codes should read:\n{table}"
        );

        let manual = doc("manual.md");
        let section = manual
            .split("## Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").nth(1))
            .unwrap();
        let documented: std::collections::BTreeSet<u8> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let mut given: std::collections::BTreeSet<u8> = CLASSES.iter().map(|c| c.exit).collect();
        given.extend([0, exit::USAGE, exit::FINDINGS, exit::DOCTOR, exit::SETUP]);
        assert_eq!(documented, given, "docs/manual.md's exit statuses");
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(one_line("a\nb"), "a\\nb");
    }
}
