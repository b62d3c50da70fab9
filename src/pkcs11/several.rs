//! Importing one key into several tokens, all or nothing: every copy is put in and
//! proven under a pending name first, then each contends for the key ID, and only then
//! do they take it, one after the other. A run cut short before that leaves pending
//! objects only, which running the import again clears; a token that already holds this
//! very key under the key ID (a run again) keeps its copy.

use super::import::{ImportOptions, Imported, PreparedImport};
use super::token::Token;
use crate::error::{Copies, LeftCopy};
use crate::{fingerprint, Error, KeyId, P8Key};

/// Imports `key` as `key_id` into every token of `tokens`, all or nothing, and returns
/// what was imported into each, in their order. With one token this is
/// [`Token::import`]'s work, and its errors are that token's; with several, an error
/// names the token that failed and what became of the copies
/// ([`Error::BackupFailed`]).
pub fn import_into_all(
    tokens: &[Token],
    key: &P8Key,
    key_id: &KeyId,
    options: &ImportOptions<'_>,
) -> Result<Vec<Imported>, Error> {
    let several = tokens.len() > 1;
    let mut there = Vec::new();
    let mut to_do = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if several && token.holds(key_id, key.public_key())? {
            token.clear_leftovers(key_id, key.public_key())?;
            there.push(i);
        } else {
            to_do.push(token);
        }
    }
    for token in &to_do {
        token
            .check_import(key_id, options)
            .map_err(|cause| in_token(several, token, cause, Copies::default()))?;
    }
    let mut prepared = Vec::new();
    for token in &to_do {
        match token.prepare_import(key, key_id, options) {
            Ok(import) => prepared.push(import),
            Err(cause) => return Err(in_token(several, token, cause, abandon(prepared))),
        }
    }
    let contended = prepared.iter().find_map(|p| {
        p.contend()
            .err()
            .map(|cause| (p.token().label().to_owned(), cause))
    });
    if let Some((label, cause)) = contended {
        let copies = abandon(prepared);
        return Err(in_label(several, label, cause, copies));
    }
    let mut done: Vec<(&Token, Imported)> = Vec::new();
    let mut rest = prepared.into_iter();
    while let Some(import) = rest.next() {
        let token = import.token();
        // A copy that failed its read-back is on the token and goes too; one that failed
        // to finish has removed what it made.
        let (cause, undo_here) = match import.finish() {
            Ok(imported) => match prove_copy(token, key_id, &imported) {
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
        let mut copies = roll_back(&undo, key_id);
        let abandoned = abandon(rest.collect());
        copies.removed.extend(abandoned.removed);
        copies.left.extend(abandoned.left);
        return Err(in_token(several, token, cause, copies));
    }
    let fingerprint = fingerprint(key.public_key());
    let mut imported: Vec<(usize, Imported)> = done
        .into_iter()
        .map(|(token, imported)| {
            let i = tokens
                .iter()
                .position(|t| std::ptr::eq(t, token))
                .unwrap_or(usize::MAX);
            (i, imported)
        })
        .collect();
    imported.extend(there.into_iter().map(|i| {
        (
            i,
            Imported {
                key_id: key_id.clone(),
                label: options.label.unwrap_or(key_id.as_str()).to_owned(),
                fingerprint: fingerprint.clone(),
                method: options.method,
            },
        )
    }));
    imported.sort_by_key(|(i, _)| *i);
    Ok(imported.into_iter().map(|(_, imported)| imported).collect())
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

/// Removes what the prepared imports made.
fn abandon(prepared: Vec<PreparedImport<'_, '_>>) -> Copies {
    let mut copies = Copies::default();
    for import in prepared {
        let label = import.token().label().to_owned();
        match import.abandon() {
            Ok(()) => copies.removed.push(label),
            Err(e) => copies.left.push(LeftCopy {
                token: label,
                pending: true,
                reason: e.to_string(),
            }),
        }
    }
    copies
}

/// Destroys the finished copies made.
fn roll_back(tokens: &[&Token], key_id: &KeyId) -> Copies {
    let mut copies = Copies::default();
    for token in tokens {
        match token.delete(key_id) {
            Ok(()) => copies.removed.push(token.label().to_owned()),
            Err(e) => copies.left.push(LeftCopy {
                token: token.label().to_owned(),
                pending: false,
                reason: e.to_string(),
            }),
        }
    }
    copies
}

/// The error of one token among several, naming it; the error itself for one token.
fn in_token(several: bool, token: &Token, cause: Error, copies: Copies) -> Error {
    in_label(several, token.label().to_owned(), cause, copies)
}

fn in_label(several: bool, token: String, cause: Error, copies: Copies) -> Error {
    if several {
        Error::BackupFailed {
            token,
            cause: Box::new(cause),
            copies,
        }
    } else {
        cause
    }
}
