//! Argument definitions only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use p8hsm::apple::connect::Scope;
use p8hsm::{BundleId, IssuerId, KeyId};

/// Sign Apple API tokens with a .p8 key kept inside a PKCS#11 token.
#[derive(Debug, Parser)]
#[command(name = "p8hsm", version, about, max_term_width = 100)]
pub struct Cli {
    /// PKCS#11 module [default: $PKCS11_MODULE_PATH, then SoftHSM's install paths]
    #[arg(long, global = true, env = "P8HSM_MODULE", value_name = "PATH")]
    pub module: Option<PathBuf>,

    /// Label of the token to use (tokens are chosen by label, never by slot number)
    #[arg(
        long,
        global = true,
        env = "P8HSM_TOKEN",
        value_name = "LABEL",
        default_value = "p8hsm"
    )]
    pub token: String,

    /// Where the user PIN comes from: file:PATH, env:VAR or prompt [default: prompt]
    // Parsed after clap, whose errors would echo a PIN typed here by mistake.
    #[arg(
        long,
        global = true,
        env = "P8HSM_PIN_SOURCE",
        value_name = "SOURCE",
        hide_env_values = true
    )]
    pub pin_source: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a .p8 private key into the token (once), then prove the import
    Import(ImportArgs),
    /// List the EC P-256 keys on the token
    Keys {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a key's public key as SPKI PEM
    Pubkey {
        /// Apple key ID
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: KeyId,
    },
    /// Destroy a key's private and public objects on the token
    Delete {
        /// Apple key ID
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: KeyId,
        /// Confirm the deletion (it cannot be undone: Apple keeps no copy of the key)
        #[arg(long)]
        yes: bool,
    },
    /// Sign an Apple API token with a key on the token
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The .p8 file, or - for standard input
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
    /// Apple key ID [default: from the file name AuthKey_<ID>.p8 or SubscriptionKey_<ID>.p8]
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: Option<KeyId>,
    /// CKA_LABEL of the objects [default: the key ID]
    #[arg(long, value_name = "L")]
    pub label: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// App Store Connect API token (team or individual key)
    Connect(ConnectArgs),
    /// App Store Server API token (In-App Purchase key)
    Server(ServerArgs),
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: TokenArgs,
    /// Issuer ID of a team key (a UUID)
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>,
          required_unless_present = "individual", conflicts_with = "individual")]
    pub issuer: Option<IssuerId>,
    /// The key is an individual key: the token carries sub "user" instead of iss
    #[arg(long)]
    pub individual: bool,
    /// Limit the token to a request, e.g. "GET /v1/apps" (repeatable)
    #[arg(long, value_name = "\"METHOD /path\"", value_parser = parse::<Scope>)]
    pub scope: Vec<Scope>,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: TokenArgs,
    /// Issuer ID (a UUID)
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>)]
    pub issuer: IssuerId,
    /// The app's bundle ID (claim bid)
    #[arg(long, value_name = "BUNDLE", value_parser = parse::<BundleId>)]
    pub bundle_id: BundleId,
}

/// Options every token kind shares.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Apple key ID of the signing key
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: KeyId,
    /// Seconds from now until exp
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub ttl: u64,
    /// Seconds iat is backdated, for clocks slightly ahead of Apple's; exp - iat = ttl + skew
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub skew: u64,
    /// Print {"token","key_id","issued_at","expires_at"} as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse<T: std::str::FromStr<Err = p8hsm::Error>>(s: &str) -> Result<T, p8hsm::Error> {
    s.parse()
}
