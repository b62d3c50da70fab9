//! Argument definitions only: no behaviour lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use p8hsm::apple::connect::Scope;
use p8hsm::apple::metadata::KeyKind;
use p8hsm::apple::storekit::Nonce;
use p8hsm::pkcs11::{ImportMethod, Profile};
use p8hsm::{
    BundleId, ClientId, IssuerId, KeyId, OfferId, Origin, ProductId, ServiceId, TeamId,
    TransactionId,
};
use serde::{Deserialize, Serialize};

/// Sign Apple API tokens with a .p8 key kept inside a PKCS#11 token.
#[derive(Debug, Parser)]
#[command(name = "p8hsm", version, about, max_term_width = 100)]
pub struct Cli {
    /// PKCS#11 module [default: $PKCS11_MODULE_PATH, then SoftHSM's install paths]
    #[arg(long, global = true, env = "P8HSM_MODULE", value_name = "PATH")]
    pub module: Option<PathBuf>,

    /// Label of the token to use (tokens are chosen by label, never by slot number)
    /// [default: the URI's token, then p8hsm]
    #[arg(long, global = true, env = "P8HSM_TOKEN", value_name = "LABEL")]
    pub token: Option<String>,

    /// A PKCS#11 URI (RFC 7512) naming the token and key, e.g.
    /// "pkcs11:token=p8hsm;object=2X9R4HXF34?module-path=…"; options and their environment
    /// variables win over what it says
    // Parsed after clap: a URI may carry a pin-value, which clap's errors would echo.
    #[arg(
        long,
        global = true,
        env = "P8HSM_KEY",
        value_name = "URI",
        hide_env_values = true
    )]
    pub key: Option<String>,

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

    /// Vendor profile: standard, yubihsm, cloudhsm or kmsp11 [default: detected from the
    /// module and the token]
    #[arg(long, global = true, env = "P8HSM_PROFILE", value_name = "PROFILE", value_parser = parse::<Profile>)]
    pub profile: Option<Profile>,

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
        /// Apple key ID [default: from --key]
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: Option<KeyId>,
    },
    /// Destroy a key's private and public objects (and its metadata) on the token
    Delete {
        /// Apple key ID [default: from --key]
        #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
        key_id: Option<KeyId>,
        /// Confirm the deletion (it cannot be undone: Apple keeps no copy of the key)
        #[arg(long)]
        yes: bool,
    },
    /// Sign an Apple API token (JWT) with a key on the token
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a StoreKit signature with an In-App Purchase key on the token
    #[command(subcommand)]
    Sign(SignCommand),
    /// List every reason Apple would reject a token
    Check(CheckArgs),
    /// Check the module, token, login, keys and clock, one line each
    Doctor,
    /// Log in once and hand out tokens to local clients over a unix socket
    Agent(AgentArgs),
    /// List the PKCS#11 modules p8hsm finds, in the order it considers them, and their tokens
    Modules {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
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
    /// Record what the key is for: connect, connect-individual, in-app-purchase,
    /// enterprise or developer
    #[arg(long, value_name = "KIND", value_parser = parse::<KeyKind>)]
    pub kind: Option<KeyKind>,
    /// Record the key's issuer ID (connect, in-app-purchase and enterprise keys)
    #[arg(long, value_name = "UUID", value_parser = parse::<IssuerId>, requires = "kind")]
    pub issuer: Option<IssuerId>,
    /// Record the key's Team ID (developer keys)
    #[arg(long, value_name = "ID", value_parser = parse::<TeamId>, requires = "kind")]
    pub team_id: Option<TeamId>,
    /// How the private key goes in: unwrap (C_UnwrapKey under a temporary key the token
    /// makes), create (C_CreateObject), or auto (unwrap under RSA-OAEP where offered, else
    /// create, then the AES-CBC-PAD unwrap, each when the one before fails or is refused)
    #[arg(long, value_name = "METHOD", value_parser = parse::<ImportMethod>, default_value = "auto")]
    pub method: ImportMethod,
}

/// The token kinds: what `p8hsm token` parses and what the agent receives as JSON.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TokenCommand {
    /// App Store Connect API (team or individual key)
    Connect(ConnectArgs),
    /// App Store Server API (In-App Purchase key)
    Server(InAppPurchaseArgs),
    /// External Purchase Server API (In-App Purchase key)
    ExternalPurchase(InAppPurchaseArgs),
    /// Advanced Commerce API server calls (In-App Purchase key)
    AdvancedCommerce(InAppPurchaseArgs),
    /// Retention Messaging API (In-App Purchase key)
    RetentionMessaging(InAppPurchaseArgs),
    /// Enterprise Program API
    Enterprise(EnterpriseArgs),
    /// APNs provider token (no exp; Apple accepts it for an hour)
    Apns(TeamArgs),
    /// DeviceCheck / App Attest server token (no exp; accepted for an hour)
    Devicecheck(TeamArgs),
    /// Sign in with Apple client secret
    SignInWithApple(SignInWithAppleArgs),
    /// MusicKit developer token
    Musickit(MusicKitArgs),
    /// WeatherKit REST API token
    Weatherkit(WeatherKitArgs),
    /// MapKit JS or Maps Server API token
    Mapkit(MapKitArgs),
}

/// Options every token kind shares.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TokenArgs {
    /// Apple key ID of the signing key [default: from --key]
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: Option<KeyId>,
    /// Seconds from now until exp [default: 600; 3600 for Sign in with Apple, WeatherKit
    /// and MapKit; 86400 for MusicKit]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
    /// Seconds iat is backdated, for clocks slightly ahead of Apple's; exp - iat = ttl + skew
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    #[serde(default = "default_skew")]
    pub skew: u64,
    /// Print {"token","key_id","issued_at","expires_at"} as JSON
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ConnectArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: TokenArgs,
    /// Issuer ID of a team key (a UUID) [default: recorded with the key]
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>,
          conflicts_with = "individual")]
    pub issuer: Option<IssuerId>,
    /// The key is an individual key: the token carries sub "user" instead of iss
    #[arg(long)]
    #[serde(default)]
    pub individual: bool,
    /// Limit the token to a request, e.g. "GET /v1/apps" (repeatable); a token living over
    /// 20 minutes needs scopes that are all GETs on resources allowing long-lived tokens
    #[arg(long, value_name = "\"METHOD /path\"", value_parser = parse::<Scope>)]
    #[serde(default)]
    pub scope: Vec<Scope>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct InAppPurchaseArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: TokenArgs,
    /// Issuer ID (a UUID) [default: recorded with the key]
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>)]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (claim bid)
    #[arg(long, value_name = "BUNDLE", value_parser = parse::<BundleId>)]
    pub bundle_id: BundleId,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct EnterpriseArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: TokenArgs,
    /// Issuer ID (a UUID) [default: recorded with the key]
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>)]
    pub issuer: Option<IssuerId>,
    /// Limit the token to a request (repeatable)
    #[arg(long, value_name = "\"METHOD /path\"", value_parser = parse::<Scope>)]
    #[serde(default)]
    pub scope: Vec<Scope>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TeamArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: TokenArgs,
    /// Team ID (claim iss) [default: recorded with the key]
    #[arg(long, env = "P8HSM_TEAM_ID", value_name = "ID", value_parser = parse::<TeamId>)]
    pub team_id: Option<TeamId>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SignInWithAppleArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub team: TeamArgs,
    /// Client ID (claim sub): the App ID or Services ID, case-sensitive
    #[arg(long, value_name = "ID", value_parser = parse::<ClientId>)]
    pub client_id: ClientId,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct MusicKitArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub team: TeamArgs,
    /// Limit the token to an origin (repeatable)
    #[arg(long, value_name = "ORIGIN", value_parser = parse::<Origin>)]
    #[serde(default)]
    pub origin: Vec<Origin>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct WeatherKitArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub team: TeamArgs,
    /// WeatherKit Service ID (claim sub; header id = <TeamID>.<ServiceID>)
    #[arg(long, value_name = "ID", value_parser = parse::<ServiceId>)]
    pub service_id: ServiceId,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct MapKitArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub team: TeamArgs,
    /// Limit the token to an origin (required with --mapkit-js)
    #[arg(long, value_name = "ORIGIN", value_parser = parse::<Origin>)]
    pub origin: Option<Origin>,
    /// A dynamically signed MapKit JS token (adds scope "mapkit_js")
    #[arg(long)]
    #[serde(default)]
    pub mapkit_js: bool,
}

/// The StoreKit signatures: what `p8hsm sign` parses and what the agent receives.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SignCommand {
    /// Promotional offer signature (V2 JWS)
    PromoOffer(PromoOfferArgs),
    /// Introductory-offer eligibility signature (JWS)
    IntroOfferEligibility(IntroOfferArgs),
    /// Advanced Commerce in-app request signature (JWS)
    AdvancedCommerceRequest(AdvancedCommerceArgs),
    /// Legacy (StoreKit 1) promotional offer signature: DER, base64
    PromoOfferLegacy(LegacyOfferArgs),
}

/// Options every StoreKit JWS shares.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StoreKitArgs {
    /// Apple key ID of the In-App Purchase key [default: from --key]
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: Option<KeyId>,
    /// Issuer ID (a UUID) [default: recorded with the key]
    #[arg(long, env = "P8HSM_ISSUER", value_name = "UUID", value_parser = parse::<IssuerId>)]
    pub issuer: Option<IssuerId>,
    /// The app's bundle ID (claim bid)
    #[arg(long, value_name = "BUNDLE", value_parser = parse::<BundleId>)]
    pub bundle_id: BundleId,
    /// The one-time nonce, a UUID [default: a fresh random one]
    #[arg(long, value_name = "UUID", value_parser = parse::<Nonce>)]
    pub nonce: Option<Nonce>,
    /// Print {"token","key_id","nonce","issued_at"} as JSON
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct PromoOfferArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: StoreKitArgs,
    /// Product ID of the subscription
    #[arg(long, value_name = "ID", value_parser = parse::<ProductId>)]
    pub product_id: ProductId,
    /// Identifier of the promotional offer
    #[arg(long, value_name = "ID", value_parser = parse::<OfferId>)]
    pub offer_id: OfferId,
    /// The customer's transaction ID (recommended)
    #[arg(long, value_name = "ID", value_parser = parse::<TransactionId>)]
    pub transaction_id: Option<TransactionId>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct IntroOfferArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: StoreKitArgs,
    /// Product ID of the subscription
    #[arg(long, value_name = "ID", value_parser = parse::<ProductId>)]
    pub product_id: ProductId,
    /// Whether the customer may have the introductory offer
    #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
    pub allow_intro_offer: bool,
    /// The customer's transaction ID
    #[arg(long, value_name = "ID", value_parser = parse::<TransactionId>)]
    pub transaction_id: TransactionId,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct AdvancedCommerceArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: StoreKitArgs,
    /// The JSON request body, from a file or - for standard input
    #[arg(long, value_name = "FILE|-", required = true)]
    #[serde(skip)]
    pub request_file: Option<PathBuf>,
    /// The JSON request body itself (what the agent receives; read from --request-file)
    #[arg(skip)]
    #[serde(default)]
    pub request: Option<String>,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct LegacyOfferArgs {
    /// Apple key ID of the In-App Purchase key [default: from --key]
    #[arg(long, value_name = "ID", value_parser = parse::<KeyId>)]
    pub key_id: Option<KeyId>,
    /// The app's bundle ID
    #[arg(long, value_name = "BUNDLE", value_parser = parse::<BundleId>)]
    pub bundle_id: BundleId,
    /// Product ID of the subscription
    #[arg(long, value_name = "ID", value_parser = parse::<ProductId>)]
    pub product_id: ProductId,
    /// Identifier of the promotional offer
    #[arg(long, value_name = "ID", value_parser = parse::<OfferId>)]
    pub offer_id: OfferId,
    /// The app account token / application username (lower-cased) [default: empty]
    #[arg(long, value_name = "TOKEN", default_value = "")]
    #[serde(default)]
    pub app_account_token: String,
    /// The one-time nonce, a UUID [default: a fresh random one]
    #[arg(long, value_name = "UUID", value_parser = parse::<Nonce>)]
    pub nonce: Option<Nonce>,
    /// UNIX time in milliseconds [default: now]
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<u64>,
    /// Print {"signature","key_id","nonce","timestamp"} as JSON
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The token, or - to read it from standard input
    #[arg(value_name = "JWT|-")]
    pub jwt: String,
    /// Which API the token is for, where its aud is shared [default: from aud and claims]
    #[arg(long, value_name = "KIND", value_parser = parse::<p8hsm::apple::check::Kind>)]
    pub kind: Option<p8hsm::apple::check::Kind>,
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

/// `p8hsm agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The socket [default: $XDG_RUNTIME_DIR/p8hsm/agent.sock, else a private directory
    /// under /tmp]
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
    #[arg(long, value_name = "ID,…", value_delimiter = ',', value_parser = parse::<KeyId>)]
    pub keys: Vec<KeyId>,
    /// Append audit lines to this file (created with mode 0600) instead of stderr
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Put the whole token in each audit line (off: the claims' SHA-256 only)
    #[arg(long)]
    pub audit_tokens: bool,
}

/// How the agent writes its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `time event key=value …`
    Text,
    /// One JSON object a line.
    Json,
}

fn default_skew() -> u64 {
    60
}

fn parse<T: std::str::FromStr<Err = p8hsm::Error>>(s: &str) -> Result<T, p8hsm::Error> {
    s.parse()
}
