//! `p8hsm import`: read and check the key before touching any token, import it once
//! into the token (and into each `--also-into` token: all or nothing), prove every
//! copy, and say what was imported.

use std::path::Path;

use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::pkcs11::{self, ImportOptions};
use p8hsm::{KeyId, P8Key, Token};

use super::args::{Identities, ImportArgs};
use crate::failure::{print, Failure};
use crate::input;
use crate::settings::Config;

impl Identities {
    /// What to record beside the key, checked against the key ID's form.
    pub fn metadata(&self, key_id: &KeyId) -> Result<Option<KeyMetadata>, Failure> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        kind.check_key_id(key_id)?;
        let mut meta = KeyMetadata::new(kind);
        for (identity, value) in &self.given {
            meta = meta.with(identity, value)?;
        }
        // What a kind records is recorded with it, or every token would have to give it
        // (and nothing can add it later).
        if let Some(missing) = kind
            .identities()
            .iter()
            .find(|identity| meta.recorded(identity.field).is_none())
        {
            let option = crate::remedy::Audience::CommandLine.field(missing.field);
            return Err(Failure::Option {
                message: format!("{kind} keys record their {}: give {option}", missing.about),
                hint: Some(format!(
                    "hint: `p8hsm import --kind {kind} {option} {}` records it once for every token",
                    missing.placeholder
                )),
            });
        }
        Ok(Some(meta))
    }
}

/// The lines that describe recorded metadata, for `import` and `assign`.
pub fn describe(meta: &KeyMetadata) -> String {
    let mut out = format!("kind         {}\n", meta.kind);
    for (identity, value) in meta.identities() {
        out.push_str(&format!("{:<12} {value}\n", identity.field));
    }
    out
}

pub fn import(args: &ImportArgs, config: &Config) -> Result<(), Failure> {
    // Read and check everything before touching a token: bad input writes nothing.
    let key_id = key_id(args, config)?;
    let metadata = args.identities.metadata(&key_id)?;
    let key = {
        let bytes = input::read(&args.file, MAX_KEY_FILE_BYTES)?;
        P8Key::parse(&bytes).map_err(p8hsm::Error::from)?
    };
    let others = args
        .also_into
        .iter()
        .map(|uri| config.other(uri))
        .collect::<Result<Vec<_>, _>>()?;
    let metadata_bytes = metadata.as_ref().map(KeyMetadata::to_bytes);
    let options = ImportOptions {
        label: args.label.as_deref(),
        metadata: metadata_bytes.as_deref(),
        method: args.method,
    };
    // Every token is opened, and asked whether it would take the key, before any is
    // written to.
    let mut tokens = vec![config.open()?];
    for (spec, pin) in others {
        let found = Token::find(&spec)?;
        if tokens
            .iter()
            .any(|t| t.label() == found.label() && same_module(t.module(), &spec.module))
        {
            return Err(Failure::Usage(format!(
                "--also-into names token \"{}\", which the import writes to already: \
                 name each other token once",
                found.label()
            )));
        }
        let pin = pin.read(found.label())?;
        tokens.push(found.login(pin)?);
    }
    let done = pkcs11::import_into_all(&tokens, &key, &key_id, &options)?;
    drop(key);
    let imported = &done[0];
    let mut out = format!(
        "key_id       {}\nlabel        {}\nfingerprint  {}\nmethod       {}\n",
        imported.key_id, imported.label, imported.fingerprint, imported.method
    );
    if let Some(meta) = &metadata {
        out.push_str(&describe(meta));
    }
    if tokens.len() > 1 {
        let labels: Vec<&str> = tokens.iter().map(Token::label).collect();
        out.push_str(&format!("tokens       {}\n", labels.join(", ")));
    }
    // The key is on the token now: a failed report must not read as a failed import.
    print(&out).map_err(|failure| match failure {
        Failure::Output(source) => Failure::Unreported {
            key_id: imported.key_id.clone(),
            source,
        },
        other => other,
    })
}

/// Whether two module paths name one module.
fn same_module(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// The key ID: `--key-id`, Apple's file name, or the `--key` URI; the first two must agree.
fn key_id(args: &ImportArgs, config: &Config) -> Result<KeyId, Failure> {
    let path = args.file.as_path();
    let in_name = if path == Path::new("-") {
        None
    } else {
        KeyId::from_file_name(path)
    };
    match (&args.key_id, in_name) {
        (Some(given), Some(in_name)) if *given != in_name => Err(Failure::KeyIdMismatch {
            given: given.clone(),
            in_name,
        }),
        (Some(given), _) => Ok(given.clone()),
        (None, Some(in_name)) => Ok(in_name),
        (None, None) => config.uri_key_id().ok_or_else(|| {
            // AuthKey_<ID>.p8 with the ID in lower case: a renamed file, said so.
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".p8"))
                .and_then(|n| {
                    n.strip_prefix("AuthKey_")
                        .or(n.strip_prefix("SubscriptionKey_"))
                })
                .map(str::to_ascii_uppercase)
                .filter(|id| id.parse::<KeyId>().is_ok());
            match named {
                Some(upper) => Failure::Option {
                    message: format!(
                        "the key ID in the file name is not as Apple writes it (upper case): \
                         was the file renamed? Its key ID would be {upper}"
                    ),
                    hint: Some(format!("hint: pass --key-id {upper} if it is")),
                },
                None => Failure::KeyIdUnknown,
            }
        }),
    }
}
