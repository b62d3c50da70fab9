//! Wires arguments to library calls and writes results to stdout.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use p8hsm::apple::check::{self, Finding};
use p8hsm::apple::metadata::{KeyKind, KeyMetadata};
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::pkcs11::uri::Pkcs11Uri;
use p8hsm::pkcs11::{ImportOptions, TokenSelector};
use p8hsm::{pkcs11, Error, IssuerId, KeyId, P8Key, PinSource, TeamId, Token};
use serde::Serialize;
use zeroize::Zeroizing;

use super::args::{CheckArgs, Cli, Command, ImportArgs, SignCommand};
use super::signing::{metadata, Call};

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
    /// Whether the PIN would be asked on the terminal.
    pub fn pin_is_prompt(&self) -> bool {
        let uri_source = self
            .uri
            .as_ref()
            .is_some_and(|u| u.pin_source.is_some() || u.pin_value.is_some());
        match &self.cli.pin_source {
            Some(source) => source == "prompt",
            None => !uri_source,
        }
    }

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
        Command::Token(_) | Command::Sign(_) => {
            let call = match cli.command {
                Command::Token(ref kind) => Call::Token(kind.clone()),
                Command::Sign(ref kind) => Call::Sign(kind.clone()),
                _ => unreachable!(),
            };
            sign(call, &ctx)
        }
        Command::Check(args) => check(args, &ctx),
        Command::Modules { json } => modules(*json, &ctx),
        Command::Doctor => super::doctor::doctor(&ctx),
        Command::Agent(args) => crate::agent::run(args, &ctx),
    }
}

fn import(args: &ImportArgs, ctx: &Ctx) -> Result<(), Failure> {
    // The key lives only in `import_key`'s frames; wipe them once they have returned.
    let result = import_key(args, ctx);
    p8hsm::p8::scrub_stack();
    print(&result?)
}

/// Imports the key and returns what to print.
fn import_key(args: &ImportArgs, ctx: &Ctx) -> Result<String, Failure> {
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
    Ok(out)
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

/// Signs a `token` or `sign` call: through the agent when `P8HSM_AGENT_SOCK` is set,
/// else with the token directly. Prints the same either way.
fn sign(mut call: Call, ctx: &Ctx) -> Result<(), Failure> {
    let key_id = ctx.key_id(call.key_id())?;
    call.set_key_id(key_id.clone());
    if let Call::Sign(SignCommand::AdvancedCommerceRequest(a)) = &mut call {
        // Read here, by the client: the agent gets the body, not a path of the client's.
        if let Some(path) = a.request_file.take() {
            let text = read_limited(&path, p8hsm::apple::storekit::MAX_REQUEST_BYTES)?;
            a.request =
                Some(
                    String::from_utf8(text.to_vec()).map_err(|_| Error::InvalidRequest {
                        reason: "it is not UTF-8".to_owned(),
                    })?,
                );
        }
    }
    let signed = match std::env::var_os("P8HSM_AGENT_SOCK").filter(|s| !s.is_empty()) {
        Some(socket) => crate::agent::client::call(Path::new(&socket), &call)?,
        None => {
            call.precheck(&key_id)?;
            let token = ctx.open()?;
            let key = token.key(&key_id)?;
            let (name, allowed) = call.name();
            let meta = metadata(&token, &key_id, &name, allowed)?;
            call.sign(&key, meta.as_ref(), None)?.0
        }
    };
    if call.json() {
        print(&json_line(&signed)?)
    } else {
        print(&format!("{}\n", signed.line()))
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
