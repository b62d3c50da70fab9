//! Wires arguments to library calls and writes results to stdout.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use p8hsm::apple::check::{self, Finding};
use p8hsm::apple::connect::{ConnectToken, EnterpriseToken, Issuer};
use p8hsm::apple::developer::{
    MapKitToken, MusicKitToken, ProviderService, ProviderToken, SignInWithAppleToken,
    WeatherKitToken,
};
use p8hsm::apple::metadata::{KeyKind, KeyMetadata};
use p8hsm::apple::server::{ServerApi, ServerToken};
use p8hsm::apple::storekit::{
    AdvancedCommerceRequest, LegacyPromotionalOffer, StoreKitRequest, StoreKitSignature,
};
use p8hsm::apple::{AppleToken, Lifetime};
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::pkcs11::uri::Pkcs11Uri;
use p8hsm::pkcs11::{ImportOptions, TokenSelector};
use p8hsm::{pkcs11, Error, IssuerId, KeyId, P8Key, PinSource, TeamId, Token};
use serde::Serialize;
use zeroize::Zeroizing;

use super::args::{
    CheckArgs, Cli, Command, ImportArgs, SignCommand, StoreKitArgs, TeamArgs, TokenArgs,
    TokenCommand,
};

/// A failure of the command, or of writing its result.
pub enum Failure {
    /// The library refused or failed.
    P8hsm(Error),
    /// The command was used wrongly in a way clap cannot see.
    Usage(String),
    /// `check` found reasons Apple would reject the token.
    Findings(usize),
    /// `doctor` found failing checks.
    Doctor(usize),
    /// stdout could not be written.
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::P8hsm(e)
    }
}

/// What the global options and `--key` URI say about where to work.
pub struct Ctx<'a> {
    cli: &'a Cli,
    uri: Option<Pkcs11Uri>,
}

impl Ctx<'_> {
    /// The module to load.
    pub fn module(&self) -> Result<std::path::PathBuf, Error> {
        pkcs11::locate_module(self.cli.module.as_deref(), self.uri.as_ref())
    }

    /// Opens the token: options and their environment variables win over the URI,
    /// which wins over the defaults. Each command does this at most once.
    pub fn open(&self) -> Result<Token, Error> {
        let uri = self.uri.as_ref();
        let module = self.module()?;
        let selector = TokenSelector {
            label: self
                .cli
                .token
                .clone()
                .or_else(|| uri.and_then(|u| u.token.clone()))
                .or_else(|| Some("p8hsm".to_owned())),
            manufacturer: uri.and_then(|u| u.manufacturer.clone()),
            model: uri.and_then(|u| u.model.clone()),
            serial: uri.and_then(|u| u.serial.clone()),
            slot_id: uri.and_then(|u| u.slot_id),
        };
        let pin = match (&self.cli.pin_source, uri) {
            (Some(source), _) => source.parse()?,
            (
                None,
                Some(Pkcs11Uri {
                    pin_source: Some(source),
                    ..
                }),
            ) => source.parse()?,
            (
                None,
                Some(Pkcs11Uri {
                    pin_value: Some(pin),
                    ..
                }),
            ) => {
                eprintln!(
                    "warning: the PKCS#11 URI carries pin-value: keep it as secret as the PIN, \
                     or use pin-source"
                );
                PinSource::Value(pin.clone())
            }
            (None, _) => PinSource::Prompt,
        };
        Token::open_as(&module, &selector, &pin, self.cli.profile)
    }

    /// The Apple key ID: the option, else the URI's id or object when it is one.
    fn key_id(&self, given: Option<&KeyId>) -> Result<KeyId, Error> {
        if let Some(key_id) = given {
            return Ok(key_id.clone());
        }
        let uri = self.uri.as_ref();
        let from_id = uri
            .and_then(|u| u.id.as_deref())
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| id.parse().ok());
        let from_object = uri
            .and_then(|u| u.object.as_deref())
            .and_then(|object| object.parse().ok());
        from_id.or(from_object).ok_or(Error::MissingInput {
            what: "--key-id",
            why: "give it, or a --key URI whose id or object is the Apple key ID",
        })
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let uri = cli.key.as_deref().map(str::parse).transpose()?;
    let ctx = Ctx { cli: &cli, uri };
    match &cli.command {
        Command::Import(args) => import(args, &ctx),
        Command::Keys { json } => keys(*json, &ctx),
        Command::Pubkey { key_id } => {
            let key_id = ctx.key_id(key_id.as_ref())?;
            let public = ctx.open()?.public_key(&key_id)?;
            let pem = public
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| Error::Internal(e.to_string()))?;
            print(&pem)
        }
        Command::Delete { key_id, yes } => {
            let key_id = ctx.key_id(key_id.as_ref())?;
            if !yes {
                return Err(Failure::Usage(format!(
                    "delete destroys key {key_id} for good (Apple keeps no copy); add --yes to confirm"
                )));
            }
            ctx.open()?.delete(&key_id)?;
            eprintln!("deleted key {key_id}");
            Ok(())
        }
        Command::Token(kind) => token(kind, &ctx),
        Command::Sign(kind) => sign(kind, &ctx),
        Command::Check(args) => check(args, &ctx),
        Command::Modules { json } => modules(*json, &ctx),
        Command::Doctor => super::doctor::doctor(&ctx),
    }
}

fn import(args: &ImportArgs, ctx: &Ctx) -> Result<(), Failure> {
    // Read and check everything before touching the token: bad input writes nothing.
    let (key, key_id) = read_key(args, ctx)?;
    let metadata = match args.kind {
        Some(kind) => Some(KeyMetadata::new(
            kind,
            args.issuer.clone(),
            args.team_id.clone(),
        )?),
        None => None,
    };
    let metadata_bytes = metadata.as_ref().map(KeyMetadata::to_bytes);
    let options = ImportOptions {
        label: args.label.as_deref(),
        metadata: metadata_bytes.as_deref(),
        method: args.method,
    };
    let imported = ctx.open()?.import(&key, &key_id, &options)?;
    let mut out = format!(
        "key_id       {}\nlabel        {}\nfingerprint  {}\nmethod       {}\n",
        imported.key_id, imported.label, imported.fingerprint, imported.method
    );
    if let Some(meta) = metadata {
        out.push_str(&format!("kind         {}\n", meta.kind));
        if let Some(issuer) = meta.issuer {
            out.push_str(&format!("issuer       {issuer}\n"));
        }
        if let Some(team_id) = meta.team_id {
            out.push_str(&format!("team_id      {team_id}\n"));
        }
    }
    print(&out)
}

/// One row of `keys`: what the token reports plus the recorded metadata.
#[derive(Serialize)]
struct KeyRow {
    #[serde(flatten)]
    info: pkcs11::KeyInfo,
    kind: Option<KeyKind>,
    issuer: Option<IssuerId>,
    team_id: Option<TeamId>,
}

fn keys(json: bool, ctx: &Ctx) -> Result<(), Failure> {
    let rows: Vec<KeyRow> = ctx
        .open()?
        .keys()?
        .into_iter()
        .map(|info| {
            let meta = info.metadata.as_deref().and_then(|bytes| {
                let key_id = info.id.parse::<KeyId>().ok()?;
                KeyMetadata::from_bytes(&key_id, bytes)
                    .map_err(|e| eprintln!("warning: {e}"))
                    .ok()
            });
            KeyRow {
                kind: meta.as_ref().map(|m| m.kind),
                issuer: meta.as_ref().and_then(|m| m.issuer.clone()),
                team_id: meta.and_then(|m| m.team_id),
                info,
            }
        })
        .collect();
    if json {
        return print(&json_line(&rows)?);
    }
    let mut out = String::new();
    if !rows.is_empty() {
        out.push_str("KEY ID      LABEL       KIND                ISSUER / TEAM                         SENSITIVE  EXTRACTABLE  PUBLIC  FINGERPRINT\n");
    }
    for row in &rows {
        let identity = row
            .issuer
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| row.team_id.as_ref().map(ToString::to_string))
            .unwrap_or_else(|| "-".to_owned());
        out.push_str(&format!(
            "{:<11} {:<11} {:<19} {:<37} {:<10} {:<12} {:<7} {}\n",
            row.info.id,
            row.info.label,
            row.kind.map_or("-", KeyKind::name),
            identity,
            yes_no(row.info.sensitive),
            yes_no(row.info.extractable),
            yes_no(row.info.has_public_key),
            row.info.fingerprint.as_deref().unwrap_or("-")
        ));
    }
    print(&out)
}

/// The command's name, its common options and the key kinds it may use.
fn describe(command: &TokenCommand) -> (&'static str, &TokenArgs, &'static [KeyKind]) {
    use TokenCommand::*;
    const IAP: &[KeyKind] = &[KeyKind::InAppPurchase];
    const DEV: &[KeyKind] = &[KeyKind::Developer];
    match command {
        Connect(a) => (
            "token connect",
            &a.common,
            &[KeyKind::Connect, KeyKind::ConnectIndividual],
        ),
        Server(a) => ("token server", &a.common, IAP),
        ExternalPurchase(a) => ("token external-purchase", &a.common, IAP),
        AdvancedCommerce(a) => ("token advanced-commerce", &a.common, IAP),
        RetentionMessaging(a) => ("token retention-messaging", &a.common, IAP),
        Enterprise(a) => ("token enterprise", &a.common, &[KeyKind::Enterprise]),
        Apns(a) => ("token apns", &a.common, DEV),
        Devicecheck(a) => ("token devicecheck", &a.common, DEV),
        SignInWithApple(a) => ("token sign-in-with-apple", &a.team.common, DEV),
        Musickit(a) => ("token musickit", &a.team.common, DEV),
        Weatherkit(a) => ("token weatherkit", &a.team.common, DEV),
        Mapkit(a) => ("token mapkit", &a.team.common, DEV),
    }
}

fn token(command: &TokenCommand, ctx: &Ctx) -> Result<(), Failure> {
    let (name, common, allowed) = describe(command);
    let key_id = ctx.key_id(common.key_id.as_ref())?;
    if matches!(
        command,
        TokenCommand::Apns(_) | TokenCommand::Devicecheck(_)
    ) && common.ttl.is_some()
    {
        return Err(Failure::Usage(format!(
            "`{name}` tokens carry no exp (Apple accepts them for an hour): --ttl does not apply"
        )));
    }
    // Refuse a request that breaks Apple's rules before asking for the PIN, when all
    // it needs was given on the command line.
    if let Ok(request) = build_token(command, &key_id, None) {
        request.times(SystemTime::now())?;
    }
    let token = ctx.open()?;
    let key = token.key(&key_id)?;
    let meta = metadata(&token, &key_id, name, allowed)?;
    let request = build_token(command, &key_id, meta.as_ref())?;
    let signed = request.sign(&key, SystemTime::now())?;
    if common.json {
        print(&json_line(&signed)?)
    } else {
        print(&format!("{}\n", signed.token))
    }
}

/// The key's recorded metadata, refusing a command for another kind of key.
fn metadata(
    token: &Token,
    key_id: &KeyId,
    command: &str,
    allowed: &[KeyKind],
) -> Result<Option<KeyMetadata>, Error> {
    let Some(bytes) = token.key_metadata(key_id)? else {
        return Ok(None);
    };
    let meta = KeyMetadata::from_bytes(key_id, &bytes)?;
    meta.allow(key_id, command, allowed)?;
    Ok(Some(meta))
}

fn build_token(
    command: &TokenCommand,
    key_id: &KeyId,
    meta: Option<&KeyMetadata>,
) -> Result<Box<dyn AppleToken>, Error> {
    use TokenCommand::*;
    let (_, common, _) = describe(command);
    let lifetime = |default_ttl: u64| Lifetime {
        ttl: common.ttl.unwrap_or(default_ttl),
        skew: common.skew,
    };
    let server = |api: ServerApi,
                  a: &super::args::InAppPurchaseArgs|
     -> Result<Box<dyn AppleToken>, Error> {
        Ok(Box::new(ServerToken {
            api,
            issuer: issuer(&a.issuer, meta, key_id)?,
            bundle_id: a.bundle_id.clone(),
            lifetime: lifetime(600),
        }))
    };
    Ok(match command {
        Connect(a) => {
            let individual = match meta.map(|m| m.kind) {
                Some(KeyKind::ConnectIndividual) if a.issuer.is_some() => {
                    return Err(Error::InvalidMetadata(format!(
                        "key {key_id} is recorded as an individual key: its tokens carry sub \"user\", not --issuer"
                    )))
                }
                Some(KeyKind::Connect) if a.individual => {
                    return Err(Error::InvalidMetadata(format!(
                        "key {key_id} is recorded as a team key: drop --individual"
                    )))
                }
                Some(kind) => kind == KeyKind::ConnectIndividual,
                None => a.individual,
            };
            Box::new(ConnectToken {
                issuer: if individual {
                    Issuer::Individual
                } else {
                    Issuer::Team(issuer(&a.issuer, meta, key_id)?)
                },
                scope: a.scope.clone(),
                lifetime: lifetime(600),
            })
        }
        Server(a) => server(ServerApi::AppStoreServer, a)?,
        ExternalPurchase(a) => server(ServerApi::ExternalPurchase, a)?,
        AdvancedCommerce(a) => server(ServerApi::AdvancedCommerce, a)?,
        RetentionMessaging(a) => server(ServerApi::RetentionMessaging, a)?,
        Enterprise(a) => Box::new(EnterpriseToken {
            issuer: issuer(&a.issuer, meta, key_id)?,
            scope: a.scope.clone(),
            lifetime: lifetime(600),
        }),
        Apns(a) | Devicecheck(a) => Box::new(ProviderToken {
            service: if matches!(command, Apns(_)) {
                ProviderService::Apns
            } else {
                ProviderService::DeviceCheck
            },
            team_id: team_id(a, key_id, meta)?,
            skew: common.skew,
        }),
        SignInWithApple(a) => Box::new(SignInWithAppleToken {
            team_id: team_id(&a.team, key_id, meta)?,
            client_id: a.client_id.clone(),
            lifetime: lifetime(3600),
        }),
        Musickit(a) => Box::new(MusicKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            origins: a.origin.clone(),
            lifetime: lifetime(86400),
        }),
        Weatherkit(a) => Box::new(WeatherKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            service_id: a.service_id.clone(),
            lifetime: lifetime(3600),
        }),
        Mapkit(a) => Box::new(MapKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            origin: a.origin.clone(),
            mapkit_js: a.mapkit_js,
            lifetime: lifetime(3600),
        }),
    })
}

/// The issuer given or recorded with the key.
fn issuer(
    given: &Option<IssuerId>,
    meta: Option<&KeyMetadata>,
    key_id: &KeyId,
) -> Result<IssuerId, Error> {
    let resolved = match meta {
        Some(meta) => meta.issuer(key_id, given.clone())?,
        None => given.clone(),
    };
    resolved.ok_or(Error::MissingInput {
        what: "--issuer",
        why:
            "give it, set P8HSM_ISSUER, or record it with `p8hsm import --kind KIND --issuer UUID`",
    })
}

/// The Team ID given or recorded with the key.
fn team_id(args: &TeamArgs, key_id: &KeyId, meta: Option<&KeyMetadata>) -> Result<TeamId, Error> {
    let resolved = match meta {
        Some(meta) => meta.team_id(key_id, args.team_id.clone())?,
        None => args.team_id.clone(),
    };
    resolved.ok_or(Error::MissingInput {
        what: "--team-id",
        why: "give it, set P8HSM_TEAM_ID, or record it with `p8hsm import --kind developer --team-id ID`",
    })
}

fn sign(command: &SignCommand, ctx: &Ctx) -> Result<(), Failure> {
    const IAP: &[KeyKind] = &[KeyKind::InAppPurchase];
    let (common, request) = match command {
        SignCommand::PromoOffer(a) => (
            &a.common,
            StoreKitRequest::PromotionalOffer {
                product_id: a.product_id.clone(),
                offer_id: a.offer_id.clone(),
                transaction_id: a.transaction_id.clone(),
            },
        ),
        SignCommand::IntroOfferEligibility(a) => (
            &a.common,
            StoreKitRequest::IntroductoryOfferEligibility {
                product_id: a.product_id.clone(),
                allow_introductory_offer: a.allow_intro_offer,
                transaction_id: a.transaction_id.clone(),
            },
        ),
        SignCommand::AdvancedCommerceRequest(a) => {
            let text = read_limited(&a.request_file, p8hsm::apple::storekit::MAX_REQUEST_BYTES)?;
            let text = String::from_utf8(text.to_vec()).map_err(|_| Error::InvalidRequest {
                reason: "it is not UTF-8".to_owned(),
            })?;
            (
                &a.common,
                StoreKitRequest::AdvancedCommerce {
                    request: AdvancedCommerceRequest::new(&text)?,
                },
            )
        }
        SignCommand::PromoOfferLegacy(a) => {
            let offer = LegacyPromotionalOffer {
                bundle_id: a.bundle_id.clone(),
                product_id: a.product_id.clone(),
                offer_id: a.offer_id.clone(),
                app_account_token: a.app_account_token.clone(),
                nonce: a.nonce.clone(),
                timestamp_ms: a.timestamp,
            };
            let key_id = ctx.key_id(a.key_id.as_ref())?;
            let token = ctx.open()?;
            let key = token.key(&key_id)?;
            metadata(&token, &key_id, "sign promo-offer-legacy", IAP)?;
            let signed = offer.sign(&key, SystemTime::now())?;
            return if a.json {
                print(&json_line(&signed)?)
            } else {
                print(&format!("{}\n", signed.signature))
            };
        }
    };
    let StoreKitArgs {
        key_id,
        issuer: given_issuer,
        bundle_id,
        nonce,
        json,
    } = common;
    let key_id = &ctx.key_id(key_id.as_ref())?;
    let token = ctx.open()?;
    let key = token.key(key_id)?;
    let meta = metadata(&token, key_id, "sign", IAP)?;
    let signature = StoreKitSignature {
        issuer: issuer(given_issuer, meta.as_ref(), key_id)?,
        bundle_id: bundle_id.clone(),
        request,
        nonce: nonce.clone(),
    };
    let signed = signature.sign(&key, SystemTime::now())?;
    if *json {
        print(&json_line(&signed)?)
    } else {
        print(&format!("{}\n", signed.token))
    }
}

#[derive(Serialize)]
struct CheckOutput<'a> {
    #[serde(flatten)]
    report: &'a check::Report,
    signature_verified: Option<bool>,
}

fn check(args: &CheckArgs, ctx: &Ctx) -> Result<(), Failure> {
    let text = if args.jwt == "-" {
        let bytes = read_limited(Path::new("-"), 64 * 1024)?;
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        args.jwt.clone()
    };
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::Clock)?
        .as_secs();
    let mut report = check::check(&text, args.kind, now);
    let key = match (&args.key_id, &args.pubkey) {
        (Some(key_id), _) => Some((ctx.open()?.public_key(key_id)?, format!("key {key_id}"))),
        (None, Some(path)) => {
            let pem = read_limited(path, 64 * 1024)?;
            let key = std::str::from_utf8(&pem)
                .ok()
                .and_then(|pem| p256::PublicKey::from_public_key_pem(pem).ok())
                .ok_or_else(|| Error::FileUnreadable {
                    path: path.clone(),
                    reason: "not a P-256 public key in SPKI PEM (\"PUBLIC KEY\")".to_owned(),
                })?;
            Some((key, path.display().to_string()))
        }
        (None, None) => None,
    };
    let verified = key.map(|(key, whose)| {
        let ok = check::verify_signature(&text, &key);
        if !ok {
            report.findings.push(Finding {
                code: "signature-mismatch",
                message: format!("the signature does not verify with {whose}'s public key"),
            });
        }
        ok
    });
    if args.json {
        print(&json_line(&CheckOutput {
            report: &report,
            signature_verified: verified,
        })?)?;
    } else {
        let mut out = String::new();
        if let Some(kind) = report.kind {
            out.push_str(&format!("kind    {kind}\n"));
        }
        for (name, value) in [("header", &report.header), ("claims", &report.claims)] {
            if let Some(value) = value {
                out.push_str(&format!("{name}  {value}\n"));
            }
        }
        for note in &report.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        if verified == Some(true) {
            out.push_str("✓ the signature verifies\n");
        }
        for finding in &report.findings {
            out.push_str(&format!("✗ {}: {}\n", finding.code, finding.message));
        }
        if report.findings.is_empty() {
            out.push_str("✓ no reason found for Apple to reject this token\n");
        }
        print(&out)?;
    }
    match report.findings.len() {
        0 => Ok(()),
        n => Err(Failure::Findings(n)),
    }
}

#[derive(Serialize)]
struct ModuleRow {
    #[serde(flatten)]
    candidate: pkcs11::modules::Candidate,
    selected: bool,
    tokens: Vec<pkcs11::modules::TokenSummary>,
    error: Option<String>,
}

fn modules(json: bool, ctx: &Ctx) -> Result<(), Failure> {
    let candidates = pkcs11::modules::candidates(ctx.cli.module.as_deref(), ctx.uri.as_ref())?;
    let mut rows = Vec::new();
    for (i, candidate) in candidates.into_iter().enumerate() {
        let (tokens, error) = if candidate.path.is_file() {
            match pkcs11::modules::tokens(&candidate.path) {
                Ok(tokens) => (tokens, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        } else {
            (Vec::new(), Some("the file does not exist".to_owned()))
        };
        rows.push(ModuleRow {
            candidate,
            selected: i == 0,
            tokens,
            error,
        });
    }
    if json {
        return print(&json_line(&rows)?);
    }
    let mut out = String::new();
    for row in &rows {
        out.push_str(&format!(
            "{} {}  ({})\n",
            if row.selected { "*" } else { " " },
            row.candidate.path.display(),
            row.candidate.source
        ));
        if let Some(error) = &row.error {
            out.push_str(&format!("    error: {error}\n"));
        }
        for token in &row.tokens {
            out.push_str(&format!(
                "    token \"{}\"  {} {}  serial {}\n      {}\n",
                token.label, token.manufacturer, token.model, token.serial, token.uri
            ));
        }
    }
    print(&out)
}

fn read_key(args: &ImportArgs, ctx: &Ctx) -> Result<(P8Key, KeyId), Error> {
    let path = args.file.as_path();
    let in_name = if path == Path::new("-") {
        None
    } else {
        KeyId::from_file_name(path)
    };
    let key_id = match (&args.key_id, in_name) {
        (Some(given), Some(in_name)) if *given != in_name => {
            return Err(Error::KeyIdMismatch {
                given: given.to_string(),
                in_name: in_name.to_string(),
            })
        }
        (Some(given), _) => given.clone(),
        (None, Some(in_name)) => in_name,
        (None, None) => ctx.key_id(None).map_err(|_| Error::KeyIdUnknown)?,
    };
    let bytes = read_limited(path, MAX_KEY_FILE_BYTES)?;
    Ok((P8Key::parse(&bytes)?, key_id))
}

/// Reads a file, or standard input for `-`, into a buffer wiped on drop: at most
/// `limit + 1` bytes, so the caller can tell an oversized input.
fn read_limited(path: &Path, limit: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let unreadable = |e: io::Error| Error::FileUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
    let limit = limit as u64 + 1;
    if path == Path::new("-") {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .map_err(unreadable)?
            .take(limit)
            .read_to_end(&mut bytes)
    }
    .map_err(unreadable)?;
    Ok(bytes)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn json_line<T: Serialize>(value: &T) -> Result<String, Error> {
    let mut text = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Writes the result to stdout; a closed pipe is not an error.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Output(e)),
        _ => Ok(()),
    }
}
