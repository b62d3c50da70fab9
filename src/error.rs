//! The one error type of the library. Each variant names a situation; the CLI adds
//! the hint saying what to do about it.

use std::path::PathBuf;

use crate::p8::P8Error;

/// Everything that can go wrong in p8hsm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key file was refused.
    #[error("{0}")]
    KeyFile(#[from] P8Error),
    /// An input file could not be read.
    #[error("cannot read {path}: {reason}")]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The key ID given and the one in Apple's file name differ.
    #[error("--key-id {given} does not match the key ID {in_name} in the file name")]
    KeyIdMismatch {
        /// From `--key-id`.
        given: String,
        /// From `AuthKey_<ID>.p8`.
        in_name: String,
    },
    /// No key ID was given and none could be inferred.
    #[error("no key ID: the file name is not AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8")]
    KeyIdUnknown,
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
    #[error("invalid label {value}: use 1 to 64 bytes without control characters")]
    InvalidLabel {
        /// The rejected value, quoted.
        value: String,
    },
    /// Not a valid App Store Connect scope entry.
    #[error("invalid scope {value}: a scope is \"METHOD /path\", e.g. \"GET /v1/apps\"")]
    InvalidScope {
        /// The rejected value, quoted.
        value: String,
    },
    /// The requested lifetime breaks the API's limit.
    #[error("{api} tokens may live at most {limit} s from iat to exp, but --ttl {ttl} with --skew {skew} gives {}", ttl + skew)]
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
    /// Something a request needs was not given.
    #[error("{what} is required: {why}")]
    MissingInput {
        /// The option, e.g. `--origin`.
        what: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// A backdate that would make a provider token older than Apple accepts.
    #[error("--skew {skew} makes a {api} token older than the {limit} s Apple accepts")]
    SkewTooLarge {
        /// The token kind.
        api: &'static str,
        /// The requested backdate.
        skew: u64,
        /// How long Apple accepts the token after iat.
        limit: u64,
    },
    /// An Advanced Commerce request body that is not a JSON object.
    #[error("invalid Advanced Commerce request: {reason}")]
    InvalidRequest {
        /// Why.
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
    /// A value given on the command line contradicts the one recorded with the key.
    #[error("{what} {given} contradicts the {what} {recorded} recorded with key {key_id}")]
    MetadataContradiction {
        /// `--issuer` or `--team-id`.
        what: &'static str,
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
    /// An option that does not apply to the request.
    #[error("{reason}")]
    InvalidOption {
        /// What is wrong.
        reason: String,
    },
    /// A zero lifetime.
    #[error("--ttl must be at least 1 second")]
    LifetimeZero,
    /// The system clock is before 1970 or absurdly far ahead.
    #[error("the system clock is not usable")]
    Clock,

    /// A PKCS#11 URI that cannot be used.
    #[error("invalid PKCS#11 URI: {reason}")]
    InvalidUri {
        /// What is wrong, naming the attribute.
        reason: String,
    },
    /// No PKCS#11 module was named and none was found at the standard paths.
    #[error("no PKCS#11 module found (looked in {})", searched.join(", "))]
    NoModule {
        /// The paths tried.
        searched: Vec<String>,
    },
    /// The named module file does not exist.
    #[error("PKCS#11 module {path} does not exist")]
    ModuleNotFound {
        /// The module path.
        path: PathBuf,
    },
    /// The module exists but could not be loaded or initialized.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad {
        /// The module path.
        path: PathBuf,
        /// What the loader or C_Initialize said.
        reason: String,
    },
    /// No token matches.
    #[error("no token {wanted} ({})", describe_tokens(available))]
    TokenNotFound {
        /// What was asked for, e.g. `labelled "p8hsm"`.
        wanted: String,
        /// Labels of the tokens that exist.
        available: Vec<String>,
    },
    /// Several tokens match.
    #[error("{count} tokens match: {wanted}")]
    TokenAmbiguous {
        /// What was asked for.
        wanted: String,
        /// How many tokens carry it.
        count: usize,
    },

    /// The PIN source could not give a PIN.
    #[error("cannot read the PIN: {reason}")]
    PinSource {
        /// Why.
        reason: String,
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
    /// The key exists but has no public key object.
    #[error("key {key_id} has no public key object on the token")]
    PublicKeyMissing {
        /// The key ID.
        key_id: String,
    },
    /// The object on the token is not a P-256 key.
    #[error("key {key_id} on the token is not an EC P-256 key")]
    NotP256 {
        /// The key ID.
        key_id: String,
    },
    /// An import would duplicate an existing object.
    #[error("the token already holds {what}; nothing was written")]
    DuplicateKey {
        /// What clashes, e.g. `an object with CKA_ID "ABC"`.
        what: String,
    },
    /// The token cannot import this way, or at all.
    #[error("{token} cannot import the key: {reason}")]
    ImportUnsupported {
        /// Which token.
        token: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// The import's proof failed; the created objects were destroyed.
    #[error("import check failed: {reason}; the objects created were destroyed")]
    ImportCheck {
        /// What did not hold.
        reason: String,
    },
    /// An import failed and the objects it created could not all be removed.
    #[error("import of {key_id} failed and left objects on the token: {reason}")]
    ImportLeftObjects {
        /// The key ID.
        key_id: String,
        /// What failed, then what the cleanup said.
        reason: String,
    },
    /// The token returned a signature that is not 64 bytes R||S.
    #[error("the token returned a {len}-byte signature, not a 64-byte ECDSA P-256 R||S")]
    BadSignature {
        /// Its length.
        len: usize,
    },
    /// Any other PKCS#11 failure.
    #[error("{operation} failed: {rv}")]
    Pkcs11 {
        /// What p8hsm was doing.
        operation: &'static str,
        /// The return value's name, e.g. `CKR_DEVICE_ERROR`.
        rv: String,
    },
    /// The token went away (the agent waits before trying it again).
    #[error("token unavailable: the HSM or its server does not answer")]
    TokenUnavailable,
    /// The agent is restricted to other keys.
    #[error("this agent does not sign with key {key_id}")]
    KeyNotAllowed {
        /// The key ID.
        key_id: String,
    },
    /// The agent could not be started.
    #[error("cannot start the agent: {reason}")]
    AgentSetup {
        /// Why.
        reason: String,
    },
    /// No agent answers on the socket.
    #[error("cannot reach the agent at {}: {reason}", socket.display())]
    AgentUnreachable {
        /// `P8HSM_AGENT_SOCK`.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent refused or failed the request.
    #[error("{message}")]
    Agent {
        /// The protocol's error code.
        code: String,
        /// The agent's message.
        message: String,
        /// The agent's hint.
        hint: Option<String>,
    },
    /// A bug: something that cannot happen did.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::Internal`] from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }
}

fn describe_tokens(labels: &[String]) -> String {
    if labels.is_empty() {
        "the module has no initialized token".to_owned()
    } else {
        format!("tokens present: {}", labels.join(", "))
    }
}
