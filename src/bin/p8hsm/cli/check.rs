//! `p8hsm check`: every reason Apple would reject a token, and whether its signature
//! verifies with a key on the token or in a PEM file.

use std::path::Path;
use std::time::SystemTime;

use p256::pkcs8::DecodePublicKey;
use p8hsm::apple::check::{self, Finding};
use serde::Serialize;

use super::args::CheckArgs;
use super::json_line;
use crate::failure::{print, Failure};
use crate::input;
use crate::settings::Config;

/// The most `check` reads of a token or a public key.
const MAX_INPUT: usize = 64 * 1024;

#[derive(Serialize)]
struct CheckOutput<'a> {
    #[serde(flatten)]
    report: &'a check::Report,
    signature_verified: Option<bool>,
}

pub fn check(args: &CheckArgs, config: &Config) -> Result<(), Failure> {
    let text = if args.jwt == "-" {
        let bytes = input::read(Path::new("-"), MAX_INPUT)?;
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        args.jwt.clone()
    };
    let now = p8hsm::apple::clock(SystemTime::now())?;
    let mut report = check::check(&text, args.kind, now);
    let key = match (&args.key_id, &args.pubkey) {
        (Some(key_id), _) => Some((config.open()?.public_key(key_id)?, format!("key {key_id}"))),
        (None, Some(path)) => {
            let pem = input::read_text(path, MAX_INPUT)?;
            let key = p256::PublicKey::from_public_key_pem(&pem).map_err(|_| Failure::File {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a P-256 public key in SPKI PEM (\"PUBLIC KEY\")",
                ),
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
