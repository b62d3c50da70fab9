//! The command line's one-shot commands: argument definitions, the global options
//! resolved once ([`Config`]), and each command wired to the library. `token` and
//! `sign` turn their options into the library's `Request` and sign it — through the
//! agent when `P8HSM_AGENT_SOCK` is set, else with the token.

mod args;
mod check;
mod doctor;
mod files;
mod import;
mod keygen;
mod request;
mod sign;
mod softhsm;

use p256::pkcs8::{EncodePublicKey, LineEnding};
use p8hsm::apple::metadata::{self, KeyKind, KeyMetadata};
use p8hsm::{pkcs11, Error, KeyId};
use serde::Serialize;

pub use args::Command;

use crate::settings::Config;

use crate::failure::{print, Failure};

/// Runs a one-shot command.
pub fn run(config: &Config, command: Command) -> Result<(), Failure> {
    match command {
        Command::Import(args) => import::import(&args, config),
        Command::Keygen { label } => keygen::keygen(&label, config),
        Command::Assign(args) => keygen::assign(&args, config),
        Command::Keys { json } => keys(json, config),
        Command::Pubkey { key_id } => {
            let key_id = config.key_id(key_id.as_ref())?;
            let public = config.open()?.public_key(&key_id)?;
            let pem = public
                .to_public_key_pem(LineEnding::LF)
                .map_err(Error::internal)?;
            print(&pem)
        }
        Command::Delete {
            key_id,
            all,
            unfinished,
            yes,
        } => delete(config, key_id, all, unfinished, yes),
        Command::Token(args) => sign::sign(args.0, config),
        Command::Sign(args) => sign::sign(args.0, config),
        Command::Check(args) => check::check(&args, config),
        Command::Modules { all, json } => modules(all, json, config),
        Command::Softhsm(args::SoftHsmCommand::Init { dir, label }) => {
            softhsm::init(dir.as_deref(), &label, config)
        }
        Command::Doctor => doctor::doctor(config),
    }
}

fn delete(
    config: &Config,
    key_id: Option<KeyId>,
    all: bool,
    unfinished: bool,
    yes: bool,
) -> Result<(), Failure> {
    if unfinished {
        if !yes {
            return Err(Failure::Usage(
                "delete --unfinished destroys what interrupted imports left; add --yes to confirm"
                    .to_owned(),
            ));
        }
        let gone = config.open()?.delete_unfinished()?;
        eprintln!(
            "deleted {gone} object{} of unfinished imports",
            plural(gone)
        );
        return Ok(());
    }
    let key_id = config.key_id(key_id.as_ref())?;
    if !yes {
        return Err(Failure::Usage(format!(
            "delete destroys key {key_id} for good (Apple keeps no copy); add --yes to confirm"
        )));
    }
    let token = config.open()?;
    if all {
        let gone = token.delete_all(&key_id)?;
        eprintln!("deleted {gone} object{} of key ID {key_id}", plural(gone));
    } else {
        token.delete(&key_id)?;
        eprintln!("deleted key {key_id}");
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// One row of `keys`: what the token reports plus the recorded metadata.
#[derive(Serialize)]
struct KeyRow {
    #[serde(flatten)]
    info: pkcs11::KeyInfo,
    kind: Option<KeyKind>,
    /// Every identity a key can record, null where this one records none.
    #[serde(flatten)]
    identities: serde_json::Map<String, serde_json::Value>,
}

fn keys(json: bool, config: &Config) -> Result<(), Failure> {
    let rows: Vec<KeyRow> = config
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
            let identities = metadata::recordable()
                .map(|i| {
                    let value = meta.as_ref().and_then(|m| m.recorded(i.field));
                    (i.field.to_owned(), value.into())
                })
                .collect();
            KeyRow {
                kind: meta.as_ref().map(|m| m.kind),
                identities,
                info,
            }
        })
        .collect();
    warn_about(&rows);
    if json {
        return print(&json_line(&rows)?);
    }
    let rows: Vec<KeyRow> = rows.into_iter().filter(|r| !r.info.unfinished).collect();
    let mut table = vec![[
        "KEY ID",
        "LABEL",
        "KIND",
        "ISSUER / TEAM / CLIENT",
        "ORIGIN",
        "SENSITIVE",
        "EXTRACTABLE",
        "PUBLIC",
        "FINGERPRINT",
    ]
    .map(str::to_owned)];
    for row in &rows {
        // The first identity recorded (an issuer, a Team ID or a client ID).
        let identity = row
            .identities
            .values()
            .find_map(|v| v.as_str())
            .unwrap_or("-")
            .to_owned();
        let id = if row.info.unassigned {
            "(unassigned)"
        } else {
            row.info.id.as_str()
        };
        table.push([
            id.to_owned(),
            row.info.label.clone(),
            row.kind.map_or("-", KeyKind::name).to_owned(),
            identity,
            row.info.origin.name().to_owned(),
            yes_no(row.info.sensitive).to_owned(),
            yes_no(row.info.extractable).to_owned(),
            yes_no(row.info.has_public_key).to_owned(),
            row.info
                .fingerprint
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    if rows.is_empty() {
        // Nothing on stdout (a script sees no keys); a person is told what adds one.
        eprintln!(
            "the token holds no keys: `p8hsm import AuthKey_<ID>.p8` imports one, \
             `p8hsm keygen --label LABEL` makes one in the token"
        );
        return Ok(());
    }
    print(&columns(&table))
}

/// Says on stderr what is wrong with the keys listed: a key ID on the token more than
/// once, objects of unfinished imports.
fn warn_about(rows: &[KeyRow]) {
    let unfinished = rows.iter().filter(|r| r.info.unfinished).count();
    if unfinished > 0 {
        eprintln!(
            "warning: {unfinished} private key{} of unfinished imports (never used to sign); \
             `p8hsm doctor` names them",
            plural(unfinished)
        );
    }
    let mut ids: Vec<&str> = rows
        .iter()
        .filter(|r| !r.info.unfinished && !r.info.unassigned)
        .map(|r| r.info.id.as_str())
        .collect();
    ids.sort_unstable();
    let mut duplicated: Vec<&str> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    duplicated.dedup();
    for id in duplicated {
        eprintln!(
            "warning: key ID {id} is on the token more than once; `p8hsm delete --key-id {id} \
             --all --yes` removes every copy"
        );
    }
}

#[derive(Serialize)]
struct ModuleRow {
    #[serde(flatten)]
    candidate: pkcs11::modules::Candidate,
    selected: bool,
    #[serde(flatten)]
    tokens: pkcs11::modules::Tokens,
    /// Why the module was not loaded, if it was not.
    note: Option<String>,
    error: Option<String>,
}

/// Lists the candidates, loading the selected one — and with `all` the others, each at
/// most once: p11-kit's proxy loads the registered modules itself, so they are not
/// loaded again when it is selected (a module such as tpm2-pkcs11 complains each time
/// it is loaded, and loading one can have effects of its own).
fn modules(all: bool, json: bool, config: &Config) -> Result<(), Failure> {
    use pkcs11::modules::{is_proxy, PROXY_SOURCE};
    let candidates = pkcs11::modules::candidates(config.explicit_module(), config.uri())?;
    let proxy_selected = candidates.first().is_some_and(|c| is_proxy(&c.path));
    let mut rows = Vec::new();
    for (i, candidate) in candidates.into_iter().enumerate() {
        let mut row = ModuleRow {
            selected: i == 0,
            tokens: Default::default(),
            note: None,
            error: None,
            candidate,
        };
        let registered = row.candidate.source.starts_with("p11-kit: ");
        if !row.selected && !all {
            row.note = Some("not loaded (`p8hsm modules --all` loads it)".into());
        } else if !row.selected && row.candidate.source == PROXY_SOURCE {
            row.note =
                Some("not loaded: it offers the tokens of the p11-kit modules listed".into());
        } else if !row.selected && registered && proxy_selected {
            row.note = Some("not loaded: its tokens are listed through p11-kit's proxy".into());
        } else if !row.candidate.path.is_file() {
            row.error = Some("the file does not exist".to_owned());
        } else {
            // The options' module arguments go to the module they choose (the first).
            let args = if row.selected {
                config.module_args(&row.candidate.path)?
            } else {
                pkcs11::modules::registered_args(&row.candidate.path)
            };
            match pkcs11::modules::tokens(&row.candidate.path, args.as_ref()) {
                Ok(tokens) => row.tokens = tokens,
                Err(e) => row.error = Some(e.to_string()),
            }
        }
        rows.push(row);
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
            match row.candidate.source.as_str() {
                pkcs11::modules::GIVEN => "--module",
                source => source,
            }
        ));
        if let Some(error) = &row.error {
            out.push_str(&format!("    error: {error}\n"));
        }
        if let Some(note) = &row.note {
            out.push_str(&format!("    {note}\n"));
        }
        for skipped in &row.tokens.skipped {
            out.push_str(&format!("    warning: {skipped}\n"));
        }
        for token in &row.tokens.tokens {
            out.push_str(&format!(
                "    token \"{}\"  {} {}  serial {}\n      {}\n",
                token.label, token.manufacturer, token.model, token.serial, token.uri
            ));
        }
    }
    print(&out)
}

/// Rows as left-aligned columns, each as wide as its widest cell.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
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

/// `value` as one line of JSON.
fn json_line<T: Serialize>(value: &T) -> Result<String, Error> {
    let mut text = serde_json::to_string(value).map_err(Error::internal)?;
    text.push('\n');
    Ok(text)
}
