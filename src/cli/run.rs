//! Wires arguments to library calls and writes results to stdout.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use p256::pkcs8::{EncodePublicKey, LineEnding};
use p8hsm::apple::connect::{ConnectToken, Issuer};
use p8hsm::apple::server::ServerToken;
use p8hsm::apple::{Lifetime, SignedToken, Times};
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::{pkcs11, Error, Es256Signer, KeyId, P8Key, PinSource, Token};
use zeroize::Zeroizing;

use super::args::{Cli, Command, ImportArgs, TokenArgs, TokenCommand};

/// A failure of the command, or of writing its result.
pub enum Failure {
    /// The library refused or failed.
    P8hsm(Error),
    /// The command was used wrongly in a way clap cannot see.
    Usage(String),
    /// stdout could not be written.
    Output(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::P8hsm(e)
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    let open = || -> Result<Token, Error> {
        let module = pkcs11::locate_module(cli.module.as_deref())?;
        let pin = match &cli.pin_source {
            Some(source) => source.parse()?,
            None => PinSource::Prompt,
        };
        Token::open(&module, &cli.token, &pin)
    };
    match &cli.command {
        Command::Import(args) => {
            // Read and check the key before touching the token: bad input writes nothing.
            let (key, key_id) = read_key(args)?;
            let imported = open()?.import(&key, &key_id, args.label.as_deref())?;
            print(&format!(
                "key_id       {}\nlabel        {}\nfingerprint  {}\n",
                imported.key_id, imported.label, imported.fingerprint
            ))
        }
        Command::Keys { json } => {
            let keys = open()?.keys()?;
            if *json {
                print(&json_line(&keys)?)
            } else {
                print(&keys_table(&keys))
            }
        }
        Command::Pubkey { key_id } => {
            let public = open()?.public_key(key_id)?;
            let pem = public
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| Error::Internal(e.to_string()))?;
            print(&pem)
        }
        Command::Delete { key_id, yes } => {
            if !yes {
                return Err(Failure::Usage(format!(
                    "delete destroys key {key_id} for good (Apple keeps no copy); add --yes to confirm"
                )));
            }
            open()?.delete(key_id)?;
            eprintln!("deleted key {key_id}");
            Ok(())
        }
        Command::Token(kind) => {
            let (common, request) = match kind {
                TokenCommand::Connect(args) => (
                    &args.common,
                    Request::Connect(ConnectToken {
                        issuer: match &args.issuer {
                            Some(id) => Issuer::Team(id.clone()),
                            None => Issuer::Individual,
                        },
                        scope: args.scope.clone(),
                        lifetime: lifetime(&args.common),
                    }),
                ),
                TokenCommand::Server(args) => (
                    &args.common,
                    Request::Server(ServerToken {
                        issuer: args.issuer.clone(),
                        bundle_id: args.bundle_id.clone(),
                        lifetime: lifetime(&args.common),
                    }),
                ),
            };
            // Refuse a bad lifetime before asking for the PIN.
            request.times(SystemTime::now())?;
            let token = open()?;
            let signed = request.sign(&token.key(&common.key_id)?, SystemTime::now())?;
            if common.json {
                print(&json_line(&signed)?)
            } else {
                print(&format!("{}\n", signed.token))
            }
        }
    }
}

/// The token kinds the CLI signs.
enum Request {
    Connect(ConnectToken),
    Server(ServerToken),
}

impl Request {
    fn times(&self, now: SystemTime) -> Result<Times, Error> {
        match self {
            Request::Connect(r) => r.times(now),
            Request::Server(r) => r.times(now),
        }
    }

    fn sign(&self, key: &dyn Es256Signer, now: SystemTime) -> Result<SignedToken, Error> {
        match self {
            Request::Connect(r) => r.sign(key, now),
            Request::Server(r) => r.sign(key, now),
        }
    }
}

fn lifetime(args: &TokenArgs) -> Lifetime {
    Lifetime {
        ttl: args.ttl,
        skew: args.skew,
    }
}

fn read_key(args: &ImportArgs) -> Result<(P8Key, KeyId), Error> {
    let path = args.file.as_path();
    let stdin = path == Path::new("-");
    let in_name = if stdin {
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
        (None, None) => return Err(Error::KeyIdUnknown),
    };
    let unreadable = |e: io::Error| Error::KeyFileUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
    let limit = MAX_KEY_FILE_BYTES as u64 + 1;
    if stdin {
        io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .map_err(unreadable)?
            .take(limit)
            .read_to_end(&mut bytes)
    }
    .map_err(unreadable)?;
    Ok((P8Key::parse(&bytes)?, key_id))
}

fn keys_table(keys: &[pkcs11::KeyInfo]) -> String {
    let mut out = String::new();
    if keys.is_empty() {
        return out;
    }
    out.push_str("KEY ID      LABEL       SENSITIVE  EXTRACTABLE  PUBLIC  FINGERPRINT\n");
    for key in keys {
        out.push_str(&format!(
            "{:<11} {:<11} {:<10} {:<12} {:<7} {}\n",
            key.id,
            key.label,
            yes_no(key.sensitive),
            yes_no(key.extractable),
            yes_no(key.has_public_key),
            key.fingerprint.as_deref().unwrap_or("-")
        ));
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn json_line<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    let mut text = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Writes the result to stdout; a closed pipe is not an error.
fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Output(e)),
        _ => Ok(()),
    }
}
