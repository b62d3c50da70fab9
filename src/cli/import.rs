//! `p8hsm import`: read and check the key before touching any token, import it once
//! into the token (and into each `--also-into` token: all or nothing), prove every
//! copy, and say what was imported.

use std::path::Path;

use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::pkcs11::{ImportOptions, Imported};
use p8hsm::{fingerprint, Error, KeyId, P8Key, Token};

use super::args::{Identities, ImportArgs};
use super::Config;
use crate::failure::{print, Failure};
use crate::input;

impl Identities {
    /// What to record beside the key, checked against the key ID's form.
    pub fn metadata(&self, key_id: &KeyId) -> Result<Option<KeyMetadata>, Failure> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        kind.check_key_id(key_id)?;
        let meta = KeyMetadata {
            issuer: self.issuer.clone(),
            team_id: self.team_id.clone(),
            client_id: self.client_id.clone(),
            ads_team_id: self.ads_team_id.clone(),
            ..KeyMetadata::new(kind)
        };
        Ok(Some(meta.checked()?))
    }
}

/// The lines that describe recorded metadata, for `import` and `assign`.
pub fn describe(meta: &KeyMetadata) -> String {
    let mut out = format!("kind         {}\n", meta.kind);
    for (name, value) in [
        ("issuer", meta.issuer.as_ref().map(ToString::to_string)),
        ("team_id", meta.team_id.as_ref().map(ToString::to_string)),
        (
            "client_id",
            meta.client_id.as_ref().map(ToString::to_string),
        ),
        (
            "ads_team_id",
            meta.ads_team_id.as_ref().map(ToString::to_string),
        ),
    ] {
        if let Some(value) = value {
            out.push_str(&format!("{name:<12} {value}\n"));
        }
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
    let several = tokens.len() > 1;
    // A run again of an import of several tokens that was cut short: a token that
    // holds this very key under the key ID has its copy already.
    let mut there = Vec::new();
    let mut to_do = Vec::new();
    for token in &tokens {
        if several && token.holds(&key_id, key.public_key())? {
            token.clear_leftovers(&key_id, key.public_key())?;
            there.push(token);
        } else {
            to_do.push(token);
        }
    }
    for token in &to_do {
        token
            .check_import(&key_id, &options)
            .map_err(|cause| in_token(several, token, cause, "nothing was written".to_owned()))?;
    }
    // Every copy is put in and proven under a pending name first, then each contends
    // for the key ID, and only then do they take it, one after the other: a run cut
    // short before that leaves pending objects only, which a run again clears.
    let mut prepared = Vec::new();
    for token in &to_do {
        match token.prepare_import(&key, &key_id, &options) {
            Ok(import) => prepared.push(import),
            Err(cause) => {
                let undone = match abandon(prepared) {
                    undone if undone.is_empty() => "no copy was made".to_owned(),
                    undone => undone,
                };
                return Err(in_token(several, token, cause, undone).into());
            }
        }
    }
    if let Some((token, cause)) = prepared
        .iter()
        .find_map(|p| p.contend().err().map(|cause| (p.token(), cause)))
    {
        let failed = in_token(several, token, cause, String::new());
        let undone = abandon(prepared);
        return Err(with_undone(failed, undone).into());
    }
    let mut done: Vec<(&Token, Imported)> = Vec::new();
    let mut rest = prepared.into_iter();
    while let Some(import) = rest.next() {
        let token = import.token();
        // A copy that failed its read-back is on the token and goes too; one that failed
        // to finish has removed what it made.
        let (cause, undo_here) = match import.finish() {
            Ok(imported) => match prove_copy(token, &key_id, &imported) {
                Ok(()) => {
                    done.push((token, imported));
                    continue;
                }
                Err(cause) => (cause, true),
            },
            Err(cause) => (cause, false),
        };
        let mut undo: Vec<&Token> = done.iter().map(|(t, _)| *t).collect();
        if undo_here {
            undo.push(token);
        }
        let mut undone = roll_back(&undo, &key_id);
        let abandoned = abandon(rest.collect());
        if !abandoned.is_empty() {
            undone = format!("{undone}; {abandoned}");
        }
        return Err(in_token(several, token, cause, undone).into());
    }
    let fingerprint = fingerprint(key.public_key());
    // Said in the order the tokens were named.
    for token in there {
        done.push((
            token,
            Imported {
                key_id: key_id.clone(),
                label: options.label.unwrap_or(key_id.as_str()).to_owned(),
                fingerprint: fingerprint.clone(),
                method: options.method,
            },
        ));
    }
    done.sort_by_key(|(token, _)| tokens.iter().position(|t| std::ptr::eq(t, *token)));
    drop(key);
    let (_, imported) = &done[0];
    let mut out = format!(
        "key_id       {}\nlabel        {}\nfingerprint  {}\nmethod       {}\n",
        imported.key_id, imported.label, imported.fingerprint, imported.method
    );
    if let Some(meta) = &metadata {
        out.push_str(&describe(meta));
    }
    if several {
        let labels: Vec<&str> = done.iter().map(|(t, _)| t.label()).collect();
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

/// Reads the copy's public key back from the token: it must be the key's (the import
/// has already proven that the token's private key signs for it). Tokens that keep no
/// public key object (YubiHSM 2) rest on that proof.
fn prove_copy(token: &Token, key_id: &KeyId, imported: &Imported) -> Result<(), Error> {
    match token.public_key(key_id) {
        Ok(public) if fingerprint(&public) == imported.fingerprint => Ok(()),
        Ok(public) => Err(Error::ImportCheck {
            reason: format!(
                "the token's public key reads back as {}, not {}",
                fingerprint(&public),
                imported.fingerprint
            ),
        }),
        Err(Error::PublicKeyMissing { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether two module paths name one module.
fn same_module(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(a) == canonical(b)
}

/// Removes what the prepared imports made; says what became of it.
fn abandon(prepared: Vec<p8hsm::pkcs11::PreparedImport<'_, '_>>) -> String {
    let (mut removed, mut said) = (Vec::new(), Vec::new());
    for import in prepared {
        let label = import.token().label().to_owned();
        match import.abandon() {
            Ok(()) => removed.push(format!("\"{label}\"")),
            Err(e) => said.push(format!(
                "the pending copy in \"{label}\" stays ({e}): `p8hsm doctor` names it"
            )),
        }
    }
    if !removed.is_empty() {
        said.insert(
            0,
            format!("the copies in {} were removed", removed.join(", ")),
        );
    }
    said.join("; ")
}

/// An error of several tokens with what became of the copies.
fn with_undone(error: Error, undone: String) -> Error {
    match error {
        Error::BackupFailed { token, cause, .. } => Error::BackupFailed {
            token,
            cause,
            undone: if undone.is_empty() {
                "no copy was made".to_owned()
            } else {
                undone
            },
        },
        other => other,
    }
}

/// Destroys the copies made; says what became of them.
fn roll_back(tokens: &[&Token], key_id: &KeyId) -> String {
    if tokens.is_empty() {
        return "no copy was made".to_owned();
    }
    let mut removed = Vec::new();
    let mut left = Vec::new();
    for token in tokens {
        match token.delete(key_id) {
            Ok(()) => removed.push(format!("\"{}\"", token.label())),
            Err(e) => left.push(format!(
                "removing the copy in \"{}\" failed ({e}): remove it with `p8hsm --token {} \
                 delete --key-id {key_id} --yes`",
                token.label(),
                token.label()
            )),
        }
    }
    let mut said = Vec::new();
    if !removed.is_empty() {
        said.push(format!("the copies in {} were removed", removed.join(", ")));
    }
    said.extend(left);
    said.join("; ")
}

/// The error of one token among several, naming it; the error itself for one token.
fn in_token(several: bool, token: &Token, cause: Error, undone: String) -> Error {
    if several {
        Error::BackupFailed {
            token: format!("\"{}\"", token.label()),
            cause: Box::new(cause),
            undone,
        }
    } else {
        cause
    }
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
        (None, None) => config.uri_key_id().ok_or(Failure::KeyIdUnknown),
    }
}
