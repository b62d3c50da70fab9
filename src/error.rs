//! The one error type of the library, and how each error is classified: every variant
//! names a situation with its data (which field, which limit, which value) and maps to
//! one [`ErrorCode`] (what the protocol says, and from which the command line derives its
//! exit status). What to do about it is each front end's to say, to its own audience:
//! no message here names a command-line option or an environment variable.
//!
//! The mapping is an exhaustive match: a new variant does not compile until it is
//! classified, so the front ends cannot drift apart.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::p8::P8Error;

/// Everything that can go wrong in p8hsm's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key file was refused.
    #[error("{0}")]
    KeyFile(#[from] P8Error),
    /// An identifier that is not well formed.
    #[error("invalid {what} {value}: {rule}")]
    InvalidId {
        /// What it should have been, e.g. `key ID`.
        what: &'static str,
        /// The rejected value, quoted.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Not a usable CKA_LABEL.
    #[error("invalid label {value}: use 1 to 64 bytes without control or bidirectional formatting characters")]
    InvalidLabel {
        /// The rejected value, quoted.
        value: String,
    },
    /// A CKA_LABEL in the names p8hsm gives its own unfinished imports.
    #[error(
        "invalid label {value}: labels starting p8hsm-pending- name p8hsm's unfinished imports"
    )]
    ReservedLabel {
        /// The rejected value, quoted.
        value: String,
    },
    /// Not a valid App Store Connect scope entry.
    #[error("invalid scope {value}: a scope is \"METHOD /path\" with METHOD GET, POST, PATCH, PUT or DELETE, e.g. \"GET /v1/apps\"")]
    InvalidScope {
        /// The rejected value, quoted.
        value: String,
    },
    /// The requested lifetime breaks the API's limit.
    #[error("{api} tokens may live at most {limit} s from iat to exp, but ttl {ttl} with skew {skew} gives {}", ttl.saturating_add(*skew))]
    LifetimeTooLong {
        /// The API's name.
        api: &'static str,
        /// Requested seconds from now to exp.
        ttl: u64,
        /// Seconds iat is backdated.
        skew: u64,
        /// The API's limit on exp - iat.
        limit: u64,
    },
    /// A lifetime over 20 minutes with a scope Apple does not allow for it.
    #[error("a long-lived App Store Connect token refuses scope {scope}: {reason}")]
    LongLivedScope {
        /// The offending scope entry.
        scope: String,
        /// Why.
        reason: String,
    },
    /// A backdate that would make a provider token older than Apple accepts.
    #[error("skew {skew} makes {api} tokens older than the {limit} s Apple accepts")]
    SkewTooLarge {
        /// The token kind.
        api: &'static str,
        /// The requested backdate.
        skew: u64,
        /// How long Apple accepts the token after iat.
        limit: u64,
    },
    /// A zero lifetime.
    #[error("ttl must be at least 1 second")]
    LifetimeZero,
    /// Something a request needs was not given.
    #[error("{what} is required: {why}")]
    MissingInput {
        /// The field, as the protocol names it (snake_case), e.g. `team_id`.
        field: &'static str,
        /// What it is, as messages name it, e.g. `Team ID`.
        what: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// An option that does not apply to the request, or two that exclude each other.
    #[error("{reason}")]
    NotApplicable {
        /// The field that does not apply, as the protocol names it.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A request body to sign that is not a JSON object.
    #[error("invalid request body: {reason}")]
    InvalidRequest {
        /// Why.
        reason: String,
    },
    /// A request (as the agent's protocol carries it) that is not one: not JSON, an
    /// unknown kind or field, a value of the wrong type or form.
    #[error("{reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Key metadata that does not fit the key's kind.
    #[error("{0}")]
    InvalidMetadata(String),
    /// The key's recorded kind does not allow the command.
    #[error("key {key_id} is recorded as {recorded} key; `{command}` needs {expected} key")]
    KeyKindMismatch {
        /// The key ID.
        key_id: String,
        /// The recorded kind, e.g. `an in-app-purchase`.
        recorded: String,
        /// The command, e.g. `token apns`.
        command: String,
        /// What it needs, e.g. `a developer`.
        expected: String,
    },
    /// A field the key's recorded kind excludes (`individual` for a team key).
    #[error("{reason}")]
    KindExcludes {
        /// The field, as the protocol names it.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A value given contradicts the one recorded with the key.
    #[error("{about} {given} contradicts the {about} {recorded} recorded with key {key_id}")]
    MetadataContradiction {
        /// The field, as the protocol names it, e.g. `issuer`.
        what: &'static str,
        /// What it is, as messages name it, e.g. `issuer ID`.
        about: &'static str,
        /// The value given.
        given: String,
        /// The value recorded.
        recorded: String,
        /// The key ID.
        key_id: String,
    },
    /// Stored metadata that cannot be read.
    #[error("the metadata recorded with key {key_id} is unreadable: {reason}")]
    MetadataUnreadable {
        /// The key ID.
        key_id: String,
        /// Why.
        reason: String,
    },
    /// The system clock reads a time that cannot be right (see
    /// [`apple::SANE_CLOCK`](crate::apple::SANE_CLOCK)).
    #[error("the system clock reads {reading}, which cannot be right")]
    Clock {
        /// What it reads, in UNIX seconds (or how far before 1970).
        reading: String,
    },

    /// A PKCS#11 URI that cannot be used.
    #[error("invalid PKCS#11 URI: {reason}")]
    InvalidUri {
        /// What is wrong, naming the attribute (never echoing a query value).
        reason: String,
    },
    /// No PKCS#11 module was named and none was found at the standard paths.
    #[error("no PKCS#11 module found (looked in {})", searched.join(", "))]
    NoModule {
        /// The paths tried.
        searched: Vec<String>,
    },
    /// The named module file does not exist.
    #[error("PKCS#11 module {} does not exist", path.display())]
    ModuleNotFound {
        /// The module path.
        path: PathBuf,
    },
    /// The module exists but could not be loaded or initialized.
    #[error("cannot load PKCS#11 module {}: {}", path.display(), failed.return_value())]
    ModuleLoad {
        /// The module path.
        path: PathBuf,
        /// Whether it was given initialization arguments.
        with_args: bool,
        /// What the loader or C_Initialize said.
        failed: CallFailed,
    },
    /// No token matches.
    #[error("no token {wanted} ({})", describe_tokens(available, skipped))]
    TokenNotFound {
        /// What was asked for, e.g. `labelled "p8hsm"`.
        wanted: String,
        /// Labels of the tokens that exist.
        available: Vec<String>,
        /// Slots left out because their token could not be described, and why.
        skipped: Vec<String>,
    },
    /// Several tokens match.
    #[error("{count} tokens match: {wanted}")]
    TokenAmbiguous {
        /// What was asked for.
        wanted: String,
        /// How many tokens carry it.
        count: usize,
    },

    /// C_Login said the PIN is wrong.
    #[error("the token refused the PIN (wrong PIN)")]
    PinIncorrect {
        /// What this kind of token's PINs look like, where that is a common mistake.
        pin_format: Option<&'static str>,
    },
    /// The token's PIN is locked.
    #[error("the token's user PIN is locked")]
    PinLocked,

    /// No private key with that key ID.
    #[error("no key with key ID {key_id} on the token")]
    KeyNotFound {
        /// The key ID.
        key_id: String,
    },
    /// Several private keys share the key ID.
    #[error("{count} private keys on the token have key ID {key_id}")]
    KeyAmbiguous {
        /// The key ID.
        key_id: String,
        /// How many.
        count: usize,
    },
    /// The key is not an EC P-256 key.
    #[error("key {key_id} is {what}; p8hsm signs only with EC P-256 keys, as Apple's are")]
    KeyNotP256 {
        /// The key ID.
        key_id: String,
        /// What it is instead.
        what: &'static str,
    },
    /// The key exists but has no public key object.
    #[error("key {key_id} has no public key object on the token")]
    PublicKeyMissing {
        /// The key ID.
        key_id: String,
    },
    /// An import would duplicate an existing object.
    #[error("the token already holds {what}; nothing was written")]
    DuplicateKey {
        /// What clashes, e.g. `an object with CKA_ID "ABC"`.
        what: String,
    },
    /// Another import of the same key ID won, or holds a claim on it.
    #[error("{reason}; nothing of this import was kept")]
    ImportContended {
        /// The key ID.
        key_id: String,
        /// What the import met.
        reason: String,
    },
    /// The token cannot import this way, or at all.
    #[error("{token} cannot import the key: {reason}")]
    ImportUnsupported {
        /// Which token.
        token: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// The token refused every way p8hsm tried to put the private key in; nothing was
    /// written.
    #[error("the token refused every way to take the key in: {}", tried.join("; "))]
    ImportRefused {
        /// Each way tried, with the token's answer.
        tried: Vec<String>,
    },
    /// The import's proof failed; the created objects were destroyed.
    #[error("import check failed: {reason}; the objects created were destroyed")]
    ImportCheck {
        /// What did not hold.
        reason: String,
    },
    /// An import failed and the objects it created could not all be removed.
    #[error("import of {key_id} failed and left objects on the token: {cause}; then removing them failed: {cleanup}")]
    ImportLeftObjects {
        /// The key ID.
        key_id: String,
        /// What failed.
        #[source]
        cause: Box<Error>,
        /// What the cleanup said.
        cleanup: Box<Error>,
    },
    /// No key that `keygen` generated and no key ID was assigned to has the label.
    #[error("no generated key awaiting its key ID is labelled {label}")]
    NotGenerated {
        /// The label, printable.
        label: String,
    },
    /// The label names a generated key that already has its key ID.
    #[error("the key labelled {label} already has key ID {key_id}; nothing was changed")]
    AlreadyAssigned {
        /// The label, printable.
        label: String,
        /// Its key ID.
        key_id: String,
    },
    /// The token cannot generate the key pair as p8hsm needs it.
    #[error("{token} cannot generate the key: {reason}")]
    KeygenUnsupported {
        /// Which token.
        token: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A generated key pair failed its proof; it was destroyed.
    #[error("key generation check failed: {reason}; the key pair was destroyed")]
    KeygenCheck {
        /// What did not hold.
        reason: String,
    },
    /// An import into one of several tokens (`--also-into`) failed: the copies made in
    /// the others were destroyed.
    #[error("importing into token \"{token}\" failed: {cause}; {copies}")]
    BackupFailed {
        /// The token that failed, by label.
        token: String,
        /// What failed.
        #[source]
        cause: Box<Error>,
        /// What became of the copies already made.
        copies: Copies,
    },
    /// A token could not be made.
    #[error("cannot initialize the token: {reason}")]
    TokenInit {
        /// Why.
        reason: String,
    },
    /// The token returned a signature that is not 64 bytes R||S.
    #[error("the token returned a {len}-byte signature, not a 64-byte ECDSA P-256 R||S")]
    BadSignature {
        /// Its length.
        len: usize,
    },
    /// Any other PKCS#11 failure: the call, and the return value by its `CKR_` name.
    #[error("{0}")]
    Pkcs11(CallFailed),
    /// The token went away; a long-lived [`Service`](crate::Service) waits before it
    /// calls it again.
    #[error("token unavailable: the HSM or its server does not answer")]
    TokenUnavailable,
    /// A bug: something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::Malformed`] whose reason may quote what a client sent (serde's
    /// "unknown field `…`", "invalid type: string \"…\""): each quoted run is cut to 64
    /// characters and the whole to 400, control characters escaped, so that a reply never
    /// echoes a long value or a secret put in the wrong field in full.
    pub fn malformed(reason: impl Into<String>) -> Error {
        const QUOTED: usize = 64;
        const WHOLE: usize = 400;
        let reason = reason.into();
        let push = |out: &mut String, c: char| {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        };
        let mut out = String::new();
        let mut quote: Option<char> = None;
        let mut run = 0;
        for c in reason.chars() {
            if out.chars().count() >= WHOLE {
                out.push('…');
                break;
            }
            match quote {
                Some(q) if c == q => {
                    quote = None;
                    out.push(c);
                }
                Some(_) => {
                    run += 1;
                    if run <= QUOTED {
                        push(&mut out, c);
                    } else if run == QUOTED + 1 {
                        out.push('…');
                    }
                }
                None => {
                    if c == '"' || c == '`' {
                        quote = Some(c);
                        run = 0;
                    }
                    push(&mut out, c);
                }
            }
        }
        Error::Malformed { reason: out }
    }

    /// An [`Error::Internal`] from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }

    /// The class of failure: the agent's protocol sends it, and the command line's exit
    /// status follows from it.
    pub fn code(&self) -> ErrorCode {
        use Error::*;
        match self {
            Malformed { .. } => ErrorCode::BadRequest,
            KeyFile(_)
            | InvalidId { .. }
            | InvalidLabel { .. }
            | ReservedLabel { .. }
            | InvalidScope { .. }
            | LifetimeTooLong { .. }
            | LongLivedScope { .. }
            | SkewTooLarge { .. }
            | LifetimeZero
            | MissingInput { .. }
            | InvalidRequest { .. }
            | InvalidMetadata(_)
            | InvalidUri { .. }
            | Clock { .. } => ErrorCode::InvalidInput,
            NotApplicable { .. } => ErrorCode::Usage,
            KeyKindMismatch { .. }
            | KindExcludes { .. }
            | KeyNotP256 { .. }
            | MetadataContradiction { .. }
            | MetadataUnreadable { .. } => ErrorCode::KeyKind,
            NoModule { .. }
            | ModuleNotFound { .. }
            | ModuleLoad { .. }
            | TokenNotFound { .. }
            | TokenAmbiguous { .. }
            | TokenUnavailable => ErrorCode::TokenUnavailable,
            ImportUnsupported { .. }
            | ImportRefused { .. }
            | KeygenUnsupported { .. }
            | TokenInit { .. } => ErrorCode::Unsupported,
            BackupFailed { cause, .. } => cause.code(),
            PinIncorrect { .. } | PinLocked => ErrorCode::PinRefused,
            KeyNotFound { .. } | PublicKeyMissing { .. } | NotGenerated { .. } => {
                ErrorCode::KeyNotFound
            }
            KeyAmbiguous { .. }
            | DuplicateKey { .. }
            | ImportContended { .. }
            | AlreadyAssigned { .. } => ErrorCode::KeyExists,
            ImportCheck { .. } | ImportLeftObjects { .. } | KeygenCheck { .. } => {
                ErrorCode::ImportFailed
            }
            BadSignature { .. } | Pkcs11(_) => ErrorCode::Failed,
            Internal(_) => ErrorCode::Internal,
        }
    }
}

/// A PKCS#11 call that failed: which call, its return value by its `CKR_` name (never
/// the specification's prose), and what the PKCS#11 layer, which classifies return
/// values, makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailed {
    operation: &'static str,
    return_value: String,
    cause: Cause,
    token_gone: bool,
}

/// What a failed PKCS#11 call means, as p8hsm tells causes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The module wants initialization arguments it was not given (`CKR_ARGUMENTS_BAD`
    /// at `C_Initialize`).
    NeedsArguments,
    /// A software token's store is being written by another process, or the module
    /// failed to start as one does then.
    StoreBusy,
    /// The token, its device or its server went away, or the module cannot be called.
    DeviceGone,
    /// The object (or key) the call named is not there.
    NoSuchObject,
    /// The token refuses the operation, the mechanism or the template.
    Refused,
    /// Anything else.
    Other,
}

impl CallFailed {
    /// A failed call, as the PKCS#11 layer classified it.
    pub(crate) fn new(
        operation: &'static str,
        return_value: String,
        cause: Cause,
        token_gone: bool,
    ) -> CallFailed {
        CallFailed {
            operation,
            return_value,
            cause,
            token_gone,
        }
    }

    /// The call, e.g. `C_Sign`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The return value by its `CKR_` name, or what the loader said.
    pub fn return_value(&self) -> &str {
        &self.return_value
    }

    /// What the failure means.
    pub fn cause(&self) -> Cause {
        self.cause
    }

    /// Whether it means the token, its device or its server went away (a long-lived
    /// service then leaves the token alone for a while).
    pub fn token_gone(&self) -> bool {
        self.token_gone
    }
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.operation, self.return_value)
    }
}

impl std::error::Error for CallFailed {}

/// What became of the copies already made when an import into several tokens failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copies {
    /// Tokens, by label, whose copy was removed.
    pub removed: Vec<String>,
    /// Tokens, by label, whose copy stays, and why it could not be removed.
    pub left: Vec<LeftCopy>,
}

/// A copy an import into several tokens could not remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftCopy {
    /// The token, by label.
    pub token: String,
    /// Whether it is a pending copy (an unfinished import) rather than a finished key.
    pub pending: bool,
    /// Why removing it failed.
    pub reason: String,
}

impl std::fmt::Display for Copies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut said = Vec::new();
        if !self.removed.is_empty() {
            let labels: Vec<String> = self.removed.iter().map(|l| format!("\"{l}\"")).collect();
            said.push(format!("the copies in {} were removed", labels.join(", ")));
        }
        for left in &self.left {
            let what = if left.pending { "pending copy" } else { "copy" };
            said.push(format!(
                "the {what} in \"{}\" stays ({})",
                left.token, left.reason
            ));
        }
        if said.is_empty() {
            f.write_str("no copy was made")
        } else {
            f.write_str(&said.join("; "))
        }
    }
}

fn describe_tokens(labels: &[String], skipped: &[String]) -> String {
    let mut text = if labels.is_empty() {
        "the module has no initialized token".to_owned()
    } else {
        format!("tokens present: {}", labels.join(", "))
    };
    for reason in skipped {
        text.push_str("; ");
        text.push_str(reason);
    }
    text
}

/// The class of a failure, as the agent's protocol names it (`"code"` in an error
/// reply). The command line's exit status follows from it, so a failure exits the same
/// whether the command signed directly or through the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request line is not a request (not JSON, unknown kind or field, wrong type).
    BadRequest,
    /// The request line is over the size limit.
    TooLarge,
    /// A value breaks a rule: identifiers, lifetimes, scopes, request bodies, URIs.
    InvalidInput,
    /// Options that do not apply, or exclude each other.
    Usage,
    /// The PIN was refused, is locked, or could not be read.
    PinRefused,
    /// The module or token cannot be found or reached, or has gone away.
    TokenUnavailable,
    /// The token cannot do what was asked (e.g. import).
    Unsupported,
    /// No such key on the token.
    KeyNotFound,
    /// The key ID is already on the token (or on it more than once).
    KeyExists,
    /// An import failed its proof.
    ImportFailed,
    /// The key's recorded kind or identity contradicts the request.
    KeyKind,
    /// The caller may not use this agent or service.
    Forbidden,
    /// The caller may not use this key.
    KeyNotAllowed,
    /// Too many connections: try again.
    Busy,
    /// The audit line could not be written, so nothing was handed out.
    AuditFailed,
    /// A PKCS#11 call failed unexpectedly.
    Failed,
    /// A bug.
    Internal,
    /// A code this version does not know (from a newer peer).
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_never_echoes_a_long_value_in_full() {
        let secret = format!("secret-{}", "A".repeat(60_000));
        let reason = format!("invalid type: string \"{secret}\", expected a sequence");
        let Error::Malformed { reason } = Error::malformed(reason) else {
            unreachable!()
        };
        assert!(reason.chars().count() < 200, "{reason}");
        assert!(
            reason.starts_with("invalid type: string \"secret-AAA"),
            "{reason}"
        );
        assert!(reason.ends_with("…\", expected a sequence"), "{reason}");
        let field = format!("unknown field `{}`, expected `kind`", "x".repeat(70));
        let Error::Malformed { reason } = Error::malformed(field) else {
            unreachable!()
        };
        assert_eq!(
            reason,
            format!("unknown field `{}…`, expected `kind`", "x".repeat(64))
        );
        let Error::Malformed { reason } = Error::malformed("the agent's \"a\nb\"") else {
            unreachable!()
        };
        assert_eq!(reason, "the agent's \"a\\nb\"");
    }

    #[test]
    fn codes_are_snake_case_on_the_wire_and_unknown_ones_are_tolerated() {
        assert_eq!(
            serde_json::to_string(&ErrorCode::TokenUnavailable).unwrap(),
            "\"token_unavailable\""
        );
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::Unknown
        );
    }
}
