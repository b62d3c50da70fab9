//! `p8hsm import`: read and check the key before touching the token, import it once,
//! and say what was imported.

use std::path::Path;

use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::p8::MAX_KEY_FILE_BYTES;
use p8hsm::pkcs11::ImportOptions;
use p8hsm::{KeyId, P8Key};

use super::args::ImportArgs;
use super::Config;
use crate::failure::{print, Failure};
use crate::input;

pub fn import(args: &ImportArgs, config: &Config) -> Result<(), Failure> {
    // Read and check everything before touching the token: bad input writes nothing.
    let key_id = key_id(args, config)?;
    let key = {
        let bytes = input::read(&args.file, MAX_KEY_FILE_BYTES)?;
        P8Key::parse(&bytes).map_err(p8hsm::Error::from)?
    };
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
    let imported = config.open()?.import(&key, &key_id, &options)?;
    drop(key);
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
    // The key is on the token now: a failed report must not read as a failed import.
    print(&out).map_err(|failure| match failure {
        Failure::Output(source) => Failure::Unreported {
            key_id: imported.key_id.clone(),
            source,
        },
        other => other,
    })
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
