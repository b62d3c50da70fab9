//! The one error renderer: a line saying what happened, then a hint line saying what
//! to do, on stderr; and the documented exit codes.

use std::process::ExitCode;

use p8hsm::p8::P8Error;
use p8hsm::Error;

use super::run::Failure;

/// Exit codes, as documented in the README.
pub mod code {
    /// Unexpected failure: a PKCS#11 call failed, output could not be written.
    pub const FAILURE: u8 = 1;
    /// Usage error: bad or missing options (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// Bad input: key file, IDs, scope, lifetime.
    pub const INPUT: u8 = 3;
    /// PIN: wrong, locked, or the PIN source failed.
    pub const PIN: u8 = 4;
    /// Module or token not found or not loadable.
    pub const TOKEN: u8 = 5;
    /// Key not found on the token.
    pub const KEY_NOT_FOUND: u8 = 6;
    /// Import refused: the key ID or label is already on the token.
    pub const KEY_EXISTS: u8 = 7;
    /// Import check failed (the created objects were destroyed).
    pub const IMPORT_CHECK: u8 = 8;
    /// `check` found reasons Apple would reject the token.
    pub const FINDINGS: u8 = 9;
    /// The key's recorded kind or identity contradicts the command.
    pub const KEY_KIND: u8 = 10;
    /// `doctor` found failing checks.
    pub const DOCTOR: u8 = 11;
}

/// Prints the failure to stderr and returns its exit code.
pub fn error(failure: &Failure) -> ExitCode {
    let (message, hint, status) = match failure {
        Failure::P8hsm(e) => (e.to_string(), hint(e), exit_code(e)),
        Failure::Usage(message) => (message.clone(), None, code::USAGE),
        Failure::Findings(n) => (
            format!(
                "Apple would reject this token: {n} problem{} listed above",
                if *n == 1 { "" } else { "s" }
            ),
            None,
            code::FINDINGS,
        ),
        Failure::Doctor(n) => (
            format!("{n} check{} failed", if *n == 1 { "" } else { "s" }),
            None,
            code::DOCTOR,
        ),
        Failure::Output(e) => (format!("cannot write the result: {e}"), None, code::FAILURE),
    };
    eprintln!("error: {message}");
    if let Some(hint) = hint {
        eprintln!("{hint}");
    }
    ExitCode::from(status)
}

fn exit_code(e: &Error) -> u8 {
    use Error::*;
    match e {
        Agent { code, .. } => match code.as_str() {
            "invalid_input" | "bad_request" | "too_large" => code::INPUT,
            "usage" => code::USAGE,
            "pin_refused" => code::PIN,
            "key_not_found" | "key_not_allowed" => code::KEY_NOT_FOUND,
            "key_kind" => code::KEY_KIND,
            "token_unavailable" | "forbidden" | "busy" => code::TOKEN,
            _ => code::FAILURE,
        },
        AgentUnreachable { .. } | AgentSetup { .. } | TokenUnavailable => code::TOKEN,
        KeyNotAllowed { .. } => code::KEY_NOT_FOUND,
        KeyFile(_)
        | FileUnreadable { .. }
        | KeyIdMismatch { .. }
        | KeyIdUnknown
        | InvalidId { .. }
        | InvalidLabel { .. }
        | InvalidUri { .. }
        | InvalidScope { .. }
        | LifetimeTooLong { .. }
        | LongLivedScope { .. }
        | SkewTooLarge { .. }
        | MissingInput { .. }
        | InvalidRequest { .. }
        | InvalidMetadata(_)
        | LifetimeZero => code::INPUT,
        KeyKindMismatch { .. } | MetadataContradiction { .. } | MetadataUnreadable { .. } => {
            code::KEY_KIND
        }
        PinSource { .. } | PinIncorrect { .. } | PinLocked => code::PIN,
        NoModule { .. }
        | ModuleNotFound { .. }
        | ModuleLoad { .. }
        | TokenNotFound { .. }
        | TokenAmbiguous { .. } => code::TOKEN,
        KeyNotFound { .. } | PublicKeyMissing { .. } | NotP256 { .. } => code::KEY_NOT_FOUND,
        DuplicateKey { .. } | KeyAmbiguous { .. } => code::KEY_EXISTS,
        ImportCheck { .. } | ImportLeftObjects { .. } => code::IMPORT_CHECK,
        ImportUnsupported { .. } => code::TOKEN,
        InvalidOption { .. } => code::USAGE,
        _ => code::FAILURE,
    }
}

/// The hint line for an error, if there is one.
pub fn hint(e: &Error) -> Option<String> {
    use Error::*;
    let text = match e {
        Agent { hint, .. } => return hint.clone(),
        AgentUnreachable { .. } => "hint: is `p8hsm agent` running? Unset P8HSM_AGENT_SOCK to use the \
             token directly"
            .to_owned(),
        TokenUnavailable => "hint: the agent keeps serving cached tokens and reconnects by itself; \
             check the HSM or its p11-kit server"
            .to_owned(),
        KeyNotAllowed { .. } => "hint: the agent was started with --keys; use one of those keys".to_owned(),
        KeyFile(P8Error::Encrypted) => "hint: decrypt it into the import without a file: \
             openssl pkcs8 -in KEY.p8 | p8hsm import --key-id ID -"
            .to_owned(),
        KeyFile(P8Error::SeveralBlocks(_)) => {
            "hint: keep only the private key block (openssl ecparam -genkey also writes EC PARAMETERS)"
                .to_owned()
        }
        KeyFile(_) => "hint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as downloaded \
             from App Store Connect"
            .to_owned(),
        KeyIdUnknown => "hint: pass --key-id ID (App Store Connect shows it next to the key)".to_owned(),
        KeyIdMismatch { .. } => {
            "hint: Apple names the file after the key ID; drop --key-id or check the file".to_owned()
        }
        LifetimeTooLong {
            limit: 1200,
            skew,
            api: "App Store Connect API",
            ..
        } if *skew < 1200 => format!(
            "hint: use --ttl {} or less with --skew {skew}; only tokens whose --scope entries are all \
             GETs on resources Apple allows may live longer",
            1200 - skew
        ),
        LifetimeTooLong { limit, skew, .. } if limit > skew => format!(
            "hint: use --ttl {} or less with --skew {skew}, or lower --skew",
            limit - skew
        ),
        NoModule { .. } => "hint: install SoftHSM (apt-get install softhsm2) or name your module \
             with --module PATH or P8HSM_MODULE"
            .to_owned(),
        ModuleNotFound { .. } => "hint: check --module, P8HSM_MODULE and PKCS11_MODULE_PATH".to_owned(),
        ModuleLoad { .. } => "hint: is this a PKCS#11 module built for this machine? \
             For SoftHSM, is SOFTHSM2_CONF pointing at a readable config?"
            .to_owned(),
        TokenNotFound { .. } => "hint: choose the token with --token LABEL, P8HSM_TOKEN or a --key URI \
             (`p8hsm modules` lists them); for SoftHSM, eval \"$(scripts/softhsm-init.sh)\""
            .to_owned(),
        TokenAmbiguous { .. } => "hint: name one with a --key URI that adds its serial= or slot-id= \
             (`p8hsm modules` prints each token's URI)"
            .to_owned(),
        InvalidUri { .. } => "hint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from"
            .to_owned(),
        PinSource { .. } => {
            "hint: give --pin-source file:PATH, env:VAR or prompt (or set P8HSM_PIN_SOURCE)".to_owned()
        }
        PinIncorrect { pin_format } => format!(
            "warning: repeated wrong PINs can lock a hardware token; p8hsm tried once and will \
             not retry: check the PIN source before running again{}",
            pin_format.map(|f| format!(" ({f})")).unwrap_or_default()
        ),
        PinLocked => "hint: the security officer must unlock or reset the user PIN".to_owned(),
        KeyNotFound { .. } => "hint: `p8hsm keys` lists the keys; `p8hsm import AuthKey_<ID>.p8` adds one"
            .to_owned(),
        DuplicateKey { .. } => "hint: `p8hsm keys` lists what is there; to replace a key, \
             delete it first with `p8hsm delete --key-id ID --yes`"
            .to_owned(),
        ImportLeftObjects { key_id, .. } => {
            format!("hint: remove what is left with `p8hsm delete --key-id {key_id} --yes`")
        }
        LongLivedScope { .. } => "hint: tokens over 20 minutes need --scope entries that are all GET requests \
             on resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)"
            .to_owned(),
        KeyKindMismatch { .. } => "hint: use the key Apple issued for this API; \
             `p8hsm keys` shows what each key is recorded as"
            .to_owned(),
        MetadataContradiction { what, .. } => {
            format!("hint: omit {what} to use the recorded value, or use the key it belongs to")
        }
        PublicKeyMissing { .. } => "hint: this token keeps no public key object (a YubiHSM 2's are \
             virtual); read it with the vendor's tool, e.g. yubihsm-shell -a get-public-key"
            .to_owned(),
        _ => return None,
    };
    Some(text)
}
