//! `p8hsm doctor`: one line per check, ✓ or ✗ with a hint; exit 0 only when all pass.

use std::time::SystemTime;

use p8hsm::{pkcs11, Error};

use crate::failure::{print, Failure};
use crate::remedy::Audience;
use crate::settings::Config;

/// The checks' lines and how many failed.
#[derive(Default)]
struct Report {
    out: String,
    failed: usize,
}

impl Report {
    fn pass(&mut self, line: String) {
        self.out.push_str(&format!("✓ {line}\n"));
    }

    fn fail(&mut self, line: String, hint: Option<String>) {
        self.failed += 1;
        self.out.push_str(&format!("✗ {line}\n"));
        if let Some(hint) = hint {
            self.out.push_str(&format!("  {hint}\n"));
        }
    }

    fn fail_with(&mut self, failure: &Failure) {
        let (message, hint) = failure.message_and_hint(Audience::CommandLine);
        self.fail(message, hint);
    }

    fn finish(self) -> Result<(), Failure> {
        print(&self.out)?;
        match self.failed {
            0 => Ok(()),
            n => Err(Failure::Doctor(n)),
        }
    }
}

pub fn doctor(config: &Config) -> Result<(), Failure> {
    let mut report = Report::default();
    check_clock(&mut report);

    let module = match config.module() {
        Ok(module) => module,
        Err(e) => {
            report.fail_with(&e.into());
            return report.finish();
        }
    };
    let args = match config.module_args(&module) {
        Ok(args) => args,
        Err(e) => {
            report.fail_with(&e.into());
            return report.finish();
        }
    };
    match pkcs11::modules::tokens(&module, args.as_ref()) {
        Ok(found) => {
            let labels: Vec<String> = found
                .tokens
                .iter()
                .map(|t| format!("\"{}\"", t.label))
                .collect();
            let mut line = format!(
                "module {} loads; its tokens: {}",
                module.display(),
                if labels.is_empty() {
                    "none".to_owned()
                } else {
                    labels.join(", ")
                }
            );
            for skipped in &found.skipped {
                line.push_str(&format!("; {skipped}"));
            }
            report.pass(line)
        }
        Err(e) => {
            report.fail_with(&e.into());
            return report.finish();
        }
    }
    let token = match config.open() {
        Ok(token) => {
            report.pass(format!(
                "token \"{}\" found (profile {}); login works",
                token.label(),
                token.profile()
            ));
            token
        }
        Err(
            e @ (Failure::P8hsm(Error::PinIncorrect { .. } | Error::PinLocked)
            | Failure::PinSource(_)),
        ) => {
            report.pass("token found".to_owned());
            report.fail_with(&e);
            return report.finish();
        }
        Err(e) => {
            report.fail_with(&e);
            return report.finish();
        }
    };
    match token.supports_ecdsa() {
        Ok(true) => report.pass("the token signs with CKM_ECDSA".to_owned()),
        Ok(false) => report.fail(
            "the token does not offer CKM_ECDSA signatures".to_owned(),
            Some("hint: p8hsm needs a token that signs with ECDSA on P-256".to_owned()),
        ),
        Err(e) => report.fail_with(&e.into()),
    }
    let keys = match token.keys() {
        Ok(keys) => keys,
        Err(e) => {
            report.fail_with(&e.into());
            return report.finish();
        }
    };
    if keys.is_empty() {
        report.pass("no EC P-256 keys on the token yet (`p8hsm import` adds one)".to_owned());
    }
    check_unfinished(&mut report, &token);
    let keys: Vec<_> = keys.into_iter().filter(|k| !k.unfinished).collect();
    let mut ids: Vec<&str> = keys
        .iter()
        .filter(|k| !k.unassigned)
        .map(|k| k.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let copies: Vec<_> = keys.iter().filter(|k| k.id == id).collect();
        if copies.len() > 1 {
            let fingerprints: Vec<&str> = copies
                .iter()
                .map(|k| k.fingerprint.as_deref().unwrap_or("no public key"))
                .collect();
            report.fail(
                format!(
                    "key ID {id} is on the token {} times ({}): signing with it fails",
                    copies.len(),
                    fingerprints.join(", ")
                ),
                Some(format!(
                    "hint: `p8hsm delete --key-id {id} --all --yes` removes every copy; then \
                     import the right .p8 again"
                )),
            );
        }
    }
    for key in &keys {
        let mut problems = Vec::new();
        if !key.sensitive {
            problems.push("not sensitive");
        }
        // tpm2-pkcs11 reports every key made outside the TPM (`tpm2_ptool import`) as
        // extractable: its TPM object cannot be fixed to the TPM, as a key that existed
        // outside it is not. PKCS#11 still never reveals it, so it is no reason to revoke.
        let tpm_imported = token.profile() == p8hsm::pkcs11::Profile::Tpm2
            && key.origin == p8hsm::pkcs11::KeyOrigin::Imported;
        if key.extractable && !tpm_imported {
            problems.push("extractable");
        }
        let probe = token.probe(key);
        match &probe {
            Ok(Some(false)) => {
                problems.push("a probe signature does not verify with its public key")
            }
            Ok(None) => {}
            Ok(Some(true)) => {}
            Err(_) => problems.push("the token cannot sign with it"),
        }
        let name = if key.unassigned {
            format!(
                "key labelled \"{}\" (awaiting its key ID: `p8hsm assign`)",
                key.label
            )
        } else {
            format!("key {}", key.id)
        };
        let origin = match key.origin {
            p8hsm::pkcs11::KeyOrigin::Generated => "generated in the token (never outside it)",
            p8hsm::pkcs11::KeyOrigin::Imported => "imported",
        };
        let extractable = if key.extractable {
            "reported extractable by tpm2-pkcs11 as every key imported into a TPM is (not \
             fixed to this TPM, since it existed outside it; PKCS#11 never reveals it)"
        } else {
            "not extractable"
        };
        if problems.is_empty() {
            report.pass(format!(
                "{name}: {origin}, sensitive, {extractable}, {}",
                match probe {
                    Ok(Some(true)) => "a probe signature verifies with its public key",
                    _ => "no public key object to verify a probe with",
                }
            ));
        } else {
            report.fail(
                format!("{name}: {origin}, {}", problems.join(", ")),
                Some(format!(
                    "hint: a key Apple trusts should be sensitive, unextractable and whole; re-import it \
                     from the .p8 if you still have it, or revoke it in App Store Connect ({})",
                    key.uri
                )),
            );
        }
    }
    report.finish()
}

/// Objects and claims that interrupted imports left.
fn check_unfinished(report: &mut Report, token: &p8hsm::Token) {
    match token.unfinished() {
        Ok(unfinished) if unfinished.is_empty() => {}
        Ok(unfinished) => {
            let names: Vec<String> = unfinished
                .iter()
                .map(|u| format!("{} ({})", u.what, u.label))
                .collect();
            report.fail(
                format!(
                    "{} object{} of unfinished imports: {}",
                    unfinished.len(),
                    if unfinished.len() == 1 { "" } else { "s" },
                    names.join("; ")
                ),
                Some(
                    "hint: they never sign; when no import is under way, `p8hsm delete \
                     --unfinished --yes` removes them"
                        .to_owned(),
                ),
            );
        }
        Err(e) => report.fail_with(&e.into()),
    }
}

fn check_clock(report: &mut Report) {
    match p8hsm::apple::clock(SystemTime::now()) {
        Ok(now) => report.pass(format!("the local clock reads {now} (UNIX seconds)")),
        Err(e) => report.fail_with(&e.into()),
    }
}
