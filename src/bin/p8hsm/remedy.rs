//! What to do about a failure, said to its audience. The library names the situation
//! and its data; a person at the command line is told which option, variable or command
//! helps, and a program speaking the agent's protocol or HTTP is told which JSON field.

use p8hsm::apple::metadata::{self, KeyKind};
use p8hsm::apple::{check, identity, Kind};
use p8hsm::p8::P8Error;
use p8hsm::pkcs11::Cause;
use p8hsm::Error;

/// Who reads the remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A person at the command line: options, environment variables, commands.
    CommandLine,
    /// A program over the agent's protocol or HTTP: the request's JSON fields.
    Protocol,
}

/// The environment variable the command line also reads a request field from, for the
/// identities the library's table says have one: `P8HSM_ISSUER`.
pub fn variable(field: &str) -> Option<String> {
    identity::find(field)
        .filter(|i| i.from_environment)
        .map(|i| format!("P8HSM_{}", i.field.to_ascii_uppercase()))
}

/// Whether a key can be recorded with the field when it is imported or assigned.
fn recordable(field: &str) -> bool {
    metadata::recordable().any(|i| i.field == field)
}

impl Audience {
    /// How this audience names a request field: `--team-id`, or `"team_id"`.
    pub fn field(self, name: &str) -> String {
        match self {
            Audience::CommandLine => format!("--{}", name.replace('_', "-")),
            Audience::Protocol => format!("\"{name}\""),
        }
    }

    /// A field's help text with the fields it names in braces (`{mapkit_js}`) written as
    /// this audience names them.
    pub fn help(self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            out.push_str(&rest[..start]);
            out.push_str(&self.field(&rest[start + 1..start + len]));
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }

    /// "give it" for a field: the option and its variable, or the JSON field.
    fn give(self, field: &str) -> String {
        match (self, variable(field)) {
            (Audience::CommandLine, Some(env)) => {
                format!("give {} or set {env}", self.field(field))
            }
            (Audience::CommandLine, None) => format!("give {}", self.field(field)),
            (Audience::Protocol, _) => format!("give {} in the request", self.field(field)),
        }
    }
}

/// The line that says what to do about a library error, starting `hint:` (or
/// `warning:`), where there is something to say.
pub fn remedy(e: &Error, to: Audience) -> Option<String> {
    use Audience::{CommandLine, Protocol};
    use Error::*;
    let field = |name: &str| to.field(name);
    let text = match (e, to) {
        (KeyFile(P8Error::Encrypted), _) => "hint: decrypt it into the import without a file: \
             openssl pkcs8 -in KEY.p8 | p8hsm import --key-id ID -"
            .to_owned(),
        (KeyFile(P8Error::SeveralBlocks(_)), _) => "hint: keep only the private key block \
             (openssl ecparam -genkey also writes EC PARAMETERS)"
            .to_owned(),
        (KeyFile(_), _) => "hint: Apple's .p8 files are PEM \"PRIVATE KEY\" EC P-256 keys, as \
             downloaded from App Store Connect"
            .to_owned(),
        (
            LifetimeTooLong {
                limit: 1200,
                skew,
                api: "App Store Connect API",
                ..
            },
            _,
        ) if *skew < 1200 => format!(
            "hint: use {} {} or less with {} {skew}; only tokens whose {} entries are all GETs \
             on resources Apple allows may live longer",
            field("ttl"),
            1200 - skew,
            field("skew"),
            field("scope"),
        ),
        (LifetimeTooLong { limit, skew, .. }, _) if limit > skew => format!(
            "hint: use {} {} or less with {} {skew}, or lower {}",
            field("ttl"),
            limit - skew,
            field("skew"),
            field("skew"),
        ),
        (LifetimeTooLong { .. } | SkewTooLarge { .. }, _) => {
            format!("hint: lower {}", field("skew"))
        }
        (LifetimeZero, _) => format!("hint: give {} 1 or more, or leave it out", field("ttl")),
        (LongLivedScope { .. }, _) => format!(
            "hint: tokens over 20 minutes need {} entries that are all GET requests on \
             resources Apple lists for long-lived tokens (e.g. GET /v1/ciProducts)",
            field("scope")
        ),
        (MissingInput { field: name, .. }, _) if recordable(name) => match to {
            CommandLine => format!(
                "hint: {} (a key imported or assigned with its --kind and {} records it)",
                to.give(name),
                field(name)
            ),
            Protocol => format!(
                "hint: {}, or have it recorded with the key when the key is imported",
                to.give(name)
            ),
        },
        (
            MissingInput {
                field: "key_id", ..
            },
            CommandLine,
        ) => {
            "hint: give --key-id, or a --key URI whose id or object is the Apple key ID".to_owned()
        }
        (MissingInput { field: name, .. }, _) => format!("hint: {}", to.give(name)),
        (
            InvalidId {
                what: what @ ("key ID" | "Team ID"),
                value,
                ..
            },
            _,
        ) => {
            // Apple shows these in upper case; a copy in lower case is the usual slip.
            let upper = value.trim_matches('"').to_ascii_uppercase();
            let fits = match *what {
                "key ID" => upper
                    .parse::<p8hsm::KeyId>()
                    .is_ok_and(|k| k.format() == p8hsm::KeyIdFormat::Apple),
                _ => upper.parse::<p8hsm::TeamId>().is_ok(),
            };
            if !fits || upper == value.trim_matches('"') {
                return None;
            }
            format!("hint: Apple writes {what}s in upper case: did you mean {upper}?")
        }
        (InvalidId { what: "kind", .. }, _) => {
            let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("hint: the kinds are {}", kinds.join(", "))
        }
        (
            InvalidId {
                what: "token kind", ..
            },
            _,
        ) => {
            let kinds: Vec<&str> = check::kinds().map(|k| k.name()).collect();
            format!(
                "hint: the kinds whose result is a JWT are {}",
                kinds.join(", ")
            )
        }
        (
            InvalidId {
                what: "key kind", ..
            },
            _,
        ) => {
            let kinds: Vec<&str> = KeyKind::ALL.iter().map(|k| k.name()).collect();
            format!("hint: the kinds of key are {}", kinds.join(", "))
        }
        (
            NotApplicable {
                field: "module_args",
                ..
            },
            _,
        ) => return None,
        (NotApplicable { field: "kind", .. }, _) => return None,
        (NotApplicable { field: name, .. } | KindExcludes { field: name, .. }, CommandLine) => {
            format!("hint: drop {}", field(name))
        }
        (NotApplicable { field: name, .. } | KindExcludes { field: name, .. }, Protocol) => {
            format!("hint: leave {} out of the request", field(name))
        }
        (Malformed { .. }, CommandLine) => {
            "hint: the agent's protocol is described in docs/protocol.md".to_owned()
        }
        (Malformed { .. }, Protocol) => {
            "hint: a request is one JSON object with \"kind\", \"key_id\" and the kind's \
             fields (docs/protocol.md)"
                .to_owned()
        }
        (KeyKindMismatch { .. }, CommandLine) => "hint: use the key Apple issued for this API; \
             `p8hsm keys` shows what each key is recorded as"
            .to_owned(),
        (KeyKindMismatch { .. }, Protocol) => {
            "hint: use the key Apple issued for this API".to_owned()
        }
        (MetadataContradiction { what, .. }, _) => format!(
            "hint: leave out {} to use the recorded value, or use the key it belongs to",
            field(what)
        ),
        (MetadataUnreadable { key_id, .. }, CommandLine) => format!(
            "hint: `p8hsm keys` shows the key; re-import it to record its metadata again, or \
             remove the data object labelled {key_id}"
        ),
        (Clock { .. }, _) => "hint: fix the system clock (NTP): Apple rejects tokens whose iat \
             or exp are off, so p8hsm signs nothing with it"
            .to_owned(),
        (InvalidUri { .. }, CommandLine) => {
            "hint: see RFC 7512; `p8hsm keys` and `p8hsm modules` print URIs to start from"
                .to_owned()
        }
        (NoModule { .. }, CommandLine) => "hint: install SoftHSM (apt-get install softhsm2) or \
             name your module with --module PATH or P8HSM_MODULE"
            .to_owned(),
        (ModuleNotFound { .. }, CommandLine) => {
            "hint: check --module, P8HSM_MODULE and PKCS11_MODULE_PATH".to_owned()
        }
        (
            ModuleLoad {
                with_args: false,
                failed,
                ..
            },
            CommandLine,
        ) if failed.cause() == Cause::NeedsArguments => "hint: this module wants \
             initialization arguments: give them with P8HSM_MODULE_ARGS (NSS softoken: \
             \"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\") or \
             x-init-reserved in its p11-kit registration"
            .to_owned(),
        (
            ModuleLoad {
                with_args: true, ..
            },
            CommandLine,
        ) => "hint: check the module's initialization arguments (P8HSM_MODULE_ARGS, \
              --module-args or x-init-reserved in its p11-kit registration)"
            .to_owned(),
        (ModuleLoad { failed, .. }, CommandLine) if failed.cause() == Cause::StoreBusy => {
            "hint: the module failed to start, as a software token does while another process \
             holds its store (p8hsm tried again for a moment): try again, or find that \
             process; if it persists, the module's own lines above say why (for tpm2-pkcs11, \
             check that TPM2_PKCS11_TCTI reaches the TPM)"
                .to_owned()
        }
        (ModuleLoad { .. }, CommandLine) => "hint: is this a PKCS#11 module built for this \
             machine? For SoftHSM, is SOFTHSM2_CONF pointing at a readable config?"
            .to_owned(),
        (TokenNotFound { .. }, CommandLine) => "hint: choose the token with --token LABEL, \
             P8HSM_TOKEN or a --key URI (`p8hsm modules` lists them); for SoftHSM, `p8hsm \
             softhsm init` makes one"
            .to_owned(),
        (TokenAmbiguous { .. }, CommandLine) => "hint: name one with a --key URI that adds its \
             serial= or slot-id= (`p8hsm modules` prints each token's URI)"
            .to_owned(),
        (TokenUnavailable, CommandLine) => {
            "hint: check the HSM or its p11-kit server, then try again".to_owned()
        }
        (TokenUnavailable, Protocol) => "hint: cached tokens are still handed out, and the \
             token is tried again by itself: try again shortly"
            .to_owned(),
        (PinIncorrect { pin_format }, CommandLine) => format!(
            "warning: repeated wrong PINs can lock a hardware token; p8hsm tried once and will \
             not retry: check the PIN source before running again{}",
            pin_format.map(|f| format!(" ({f})")).unwrap_or_default()
        ),
        (PinLocked, CommandLine) => {
            "hint: the security officer must unlock or reset the user PIN".to_owned()
        }
        (KeyNotFound { .. }, CommandLine) => "hint: `p8hsm keys` lists the keys; `p8hsm import \
             AuthKey_<ID>.p8` adds one"
            .to_owned(),
        (KeyNotFound { .. }, Protocol) => {
            format!(
                "hint: check {} against the keys the token holds",
                field("key_id")
            )
        }
        (DuplicateKey { .. }, CommandLine) => "hint: `p8hsm keys` lists what is there; to \
             replace a key, delete it first with `p8hsm delete --key-id ID --yes`"
            .to_owned(),
        (KeyAmbiguous { key_id, .. }, CommandLine) => format!(
            "hint: `p8hsm keys` shows their fingerprints; `p8hsm delete --key-id {key_id} --all \
             --yes` removes every one, then import the right key again"
        ),
        (ImportContended { key_id, .. }, CommandLine) => format!(
            "hint: `p8hsm keys` shows key {key_id} once an import finishes; if no import is \
             running, an interrupted one left its claim: `p8hsm doctor` names it, `p8hsm \
             delete --unfinished --yes` removes it"
        ),
        (ImportLeftObjects { key_id, .. }, CommandLine) => {
            format!("hint: remove what is left with `p8hsm delete --key-id {key_id} --yes`")
        }
        (NotGenerated { .. }, CommandLine) => "hint: `p8hsm keys` lists the keys and their \
             labels; `p8hsm keygen --label LABEL` generates one"
            .to_owned(),
        (AlreadyAssigned { .. }, CommandLine) => "hint: a key's ID cannot change; `p8hsm \
             keygen` makes a new key for a new ID"
            .to_owned(),
        (BackupFailed { copies, .. }, CommandLine) if !copies.left.is_empty() => {
            let pending = copies.left.iter().any(|c| c.pending);
            let tokens: Vec<String> = copies
                .left
                .iter()
                .filter(|c| !c.pending)
                .map(|c| format!("`p8hsm --token {} delete --key-id ID --yes`", c.token))
                .collect();
            let mut said = Vec::new();
            if pending {
                said.push(
                    "`p8hsm doctor` names the pending copies and `p8hsm delete \
                           --unfinished --yes` removes them"
                        .to_owned(),
                );
            }
            if !tokens.is_empty() {
                said.push(format!(
                    "remove the other copies with {}",
                    tokens.join(", ")
                ));
            }
            format!("hint: {}", said.join("; "))
        }
        (BackupFailed { cause, .. }, _) => return remedy(cause, to),
        (ImportRefused { .. }, CommandLine) => "hint: a --profile may shape the templates to \
             this token; docs/tokens.md says what each token takes, and what to do where none \
             works"
            .to_owned(),
        (ImportUnsupported { .. } | KeygenUnsupported { .. }, CommandLine) => {
            "hint: `p8hsm modules` lists the tokens p8hsm finds".to_owned()
        }
        (PublicKeyMissing { .. }, CommandLine) => "hint: this token keeps no public key object \
             (a YubiHSM 2's are virtual); read it with the vendor's tool, e.g. yubihsm-shell -a \
             get-public-key"
            .to_owned(),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_remedy_is_prefixed() {
        let errors = [
            Error::TokenUnavailable,
            Error::PinIncorrect { pin_format: None },
            Error::KeyNotFound { key_id: "X".into() },
            Error::Malformed { reason: "x".into() },
        ];
        for e in errors {
            for to in [Audience::CommandLine, Audience::Protocol] {
                if let Some(hint) = remedy(&e, to) {
                    assert!(
                        hint.starts_with("hint: ") || hint.starts_with("warning: "),
                        "{hint}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_program_is_told_the_json_field_and_a_person_the_option() {
        let missing = Error::MissingInput {
            field: "issuer",
            what: "issuer ID",
            why: "x",
        };
        let person = remedy(&missing, Audience::CommandLine).unwrap();
        assert!(
            person.contains("--issuer") && person.contains("P8HSM_ISSUER"),
            "{person}"
        );
        let program = remedy(&missing, Audience::Protocol).unwrap();
        assert!(program.contains("\"issuer\""), "{program}");
        assert!(
            !program.contains("--") && !program.contains("P8HSM_"),
            "{program}"
        );
    }

    #[test]
    fn help_names_fields_as_each_audience_does() {
        let text = "Limit the token to an origin (required with {mapkit_js})";
        assert_eq!(
            Audience::CommandLine.help(text),
            "Limit the token to an origin (required with --mapkit-js)"
        );
        assert_eq!(
            Audience::Protocol.help(text),
            "Limit the token to an origin (required with \"mapkit_js\")"
        );
    }
}
