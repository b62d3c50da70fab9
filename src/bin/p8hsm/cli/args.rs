//! Argument definitions only: no behaviour lives here.

use std::path::PathBuf;

use crate::settings::SecretText;
use clap::{Args, Subcommand};
use p8hsm::apple::identity::Identity;
use p8hsm::apple::metadata::{self, KeyKind};
use p8hsm::apple::Kind;
use p8hsm::pkcs11::ImportMethod;
use p8hsm::KeyId;

use super::request::{SignKinds, TokenKinds};

/// The one-shot commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a .p8 private key into the token (once), then prove the import
    Import(ImportArgs),
    /// Generate a P-256 key pair inside the token and print its public key (SPKI PEM) for
    /// Apple; then `assign` records the key ID Apple shows
    Keygen {
        /// CKA_LABEL of the pair, by which `assign` finds it
        #[arg(long, value_name = "LABEL")]
        label: String,
    },
    /// Give a key generated with `keygen` the key ID Apple showed for its public key, and
    /// record what it is for
    Assign(AssignArgs),
    /// List the EC P-256 keys on the token
    Keys {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a key's public key as SPKI PEM
    Pubkey {
        /// Apple key ID [default: from --key]
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: Option<KeyId>,
    },
    /// Destroy a key's private and public objects (and its metadata) on the token
    Delete {
        /// Apple key ID [default: from --key]
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: Option<KeyId>,
        /// Every object with the key ID, when it is on the token more than once
        #[arg(long, conflicts_with = "unfinished")]
        all: bool,
        /// Instead of a key: every object an interrupted import left, and its claim (run
        /// it when no import is under way)
        #[arg(long, conflicts_with = "key_id")]
        unfinished: bool,
        /// Confirm the deletion (it cannot be undone: Apple keeps no copy of the key)
        #[arg(long)]
        yes: bool,
    },
    /// Sign an Apple API token (JWT) with a key on the token
    #[command(subcommand)]
    Token(TokenKinds),
    /// Make a StoreKit signature with an In-App Purchase key on the token
    #[command(subcommand)]
    Sign(SignKinds),
    /// List every reason Apple would reject a token
    Check(CheckArgs),
    /// Check the module, token, login, keys and clock, one line each
    Doctor,
    /// SoftHSM test tokens, for tests and CI
    #[command(subcommand)]
    Softhsm(SoftHsmCommand),
    /// List the PKCS#11 modules p8hsm finds, in the order it considers them, and the
    /// tokens of the one it would use (p11-kit registrations disabled for p8hsm are left
    /// out)
    Modules {
        /// Load every module listed, once each, and list their tokens too
        #[arg(long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The private key file (.p8, or the PEM Apple Business/School Manager gives), or -
    /// for standard input
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Apple key ID [default: from the file name AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8]
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: Option<KeyId>,
    /// CKA_LABEL of the objects [default: the key ID]
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
    #[command(flatten)]
    pub identities: Identities,
    /// Also import the key into the token this PKCS#11 URI names (repeatable): all or
    /// nothing, each copy proven; the URI's pin-source, else --pin-source, gives its PIN
    #[arg(long, value_name = "URI", value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretText::from(s)))]
    pub also_into: Vec<SecretText>,
    /// How the private key goes in: unwrap (C_UnwrapKey under a temporary key the token
    /// makes), create (C_CreateObject), or auto (unwrap under RSA-OAEP where offered, else
    /// create, then the AES-CBC-PAD unwrap, each when the one before fails or is refused)
    #[arg(long, value_name = "METHOD", value_parser = parse::<ImportMethod>, default_value = "auto")]
    pub method: ImportMethod,
}

/// `p8hsm softhsm …`.
#[derive(Debug, Subcommand)]
pub enum SoftHsmCommand {
    /// Make a SoftHSM token store and a token with random PINs in 0600 files (through
    /// PKCS#11, no other tool), or keep the one there; print the environment to eval
    Init {
        /// The store's directory [default: $XDG_DATA_HOME/p8hsm/softhsm, else
        /// ~/.local/share/p8hsm/softhsm]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The token's label
        #[arg(long, value_name = "LABEL", default_value = "p8hsm")]
        label: String,
    },
}

/// What a key is for, recorded beside it: `import` and `assign` take the same options,
/// `--kind` and one for each identity a key can record (from the library's table).
#[derive(Debug)]
pub struct Identities {
    /// `--kind`.
    pub kind: Option<KeyKind>,
    /// The identities given, checked by their parsers.
    pub given: Vec<(&'static Identity, String)>,
}

impl clap::FromArgMatches for Identities {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Identities {
            kind: matches.get_one::<KeyKind>("kind").copied(),
            given: metadata::recordable()
                .filter_map(|i| Some((i, matches.get_one::<String>(i.field)?.clone())))
                .collect(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for Identities {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let names: Vec<&str> = KeyKind::ALL.iter().map(|k| k.name()).collect();
        let mut cmd = cmd.arg(
            clap::Arg::new("kind")
                .long("kind")
                .value_name("KIND")
                .value_parser(parse::<KeyKind>)
                .help(format!("Record what the key is for: {}", names.join(", "))),
        );
        for identity in metadata::recordable() {
            let kinds: Vec<&str> = KeyKind::ALL
                .iter()
                .filter(|k| k.records(identity))
                .map(|k| k.name())
                .collect();
            cmd = cmd.arg(
                clap::Arg::new(identity.field)
                    .long(identity.field.replace('_', "-"))
                    .value_name(identity.placeholder)
                    .requires("kind")
                    .value_parser(move |s: &str| (identity.check)(s).map(|()| s.to_owned()))
                    .help(format!(
                        "Record the key's {} ({} keys)",
                        identity.about,
                        kinds.join(", ")
                    )),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The label given to `keygen`
    #[arg(long, value_name = "LABEL")]
    pub label: String,
    /// The key ID Apple showed for the uploaded public key
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: KeyId,
    #[command(flatten)]
    pub identities: Identities,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The token, or - to read it from standard input
    #[arg(value_name = "JWT|-")]
    pub jwt: String,
    /// Which API the token is for, where its aud is shared [default: from aud and claims]
    #[arg(long, value_name = "KIND", value_parser = p8hsm::apple::check::kind)]
    pub kind: Option<Kind>,
    /// Also verify the signature with this key's public key on the token
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>, conflicts_with = "pubkey")]
    pub key_id: Option<KeyId>,
    /// Also verify the signature with the public key in this PEM file
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse<T: std::str::FromStr<Err = p8hsm::Error>>(s: &str) -> Result<T, p8hsm::Error> {
    s.parse()
}
