//! `p8hsm token KIND` and `p8hsm sign KIND`: their options are built from each kind's
//! [`Spec`] (the library states every kind's fields once), and what clap parsed is
//! turned into the library's [`Request`] once — the same JSON object the agent's
//! protocol carries, so the command line and the agent cannot read a request
//! differently.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, FromArgMatches, Subcommand};
use p8hsm::apple::spec::{Family, Field, LifetimeRule, Spec, Value as FieldValue, DEFAULT_SKEW};
use p8hsm::apple::{Kind, Request};
use p8hsm::KeyId;
use serde_json::{Map, Value};

use crate::failure::Failure;
use crate::input;
use crate::remedy::{variable, Audience};

/// A `token` or `sign` command as parsed: the kind, its fields, and what the command
/// line adds (the output format, files to read), before the key ID is resolved.
#[derive(Debug, Clone)]
pub struct RequestArgs {
    /// The kind.
    pub kind: Kind,
    /// `--key-id`, when given.
    pub key_id: Option<KeyId>,
    /// The request's fields as the protocol names them (`ttl`, `skew` and the kind's).
    fields: Map<String, Value>,
    /// Fields read from files (`--request-file`, `--body-file`).
    files: Vec<(&'static Field, PathBuf)>,
    /// `--json`.
    pub json: bool,
    /// `--out FILE --renew-within DURATION`.
    pub out: Option<Renewal>,
}

/// Where a long-lived token is kept, and how long before it lapses it is renewed.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// `--out`.
    pub path: PathBuf,
    /// `--renew-within`.
    pub within: Duration,
    /// `--force`: replace FILE even when it holds something other than a token.
    pub force: bool,
}

impl RequestArgs {
    /// The request: `key_id` (from `--key-id` or the `--key` URI) and the fields, files
    /// read, checked by the library.
    pub fn into_request(self, key_id: KeyId) -> Result<Request, Failure> {
        let mut object = self.fields;
        for (field, path) in self.files {
            let text = match field.value {
                FieldValue::Digest { limit, digest, .. } => {
                    let bytes = input::read(&path, limit)?;
                    if bytes.len() > limit {
                        return Err(Failure::File {
                            path: path.clone(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("it is over {} MiB, the most p8hsm hashes", limit >> 20),
                            ),
                        });
                    }
                    digest(&bytes)
                }
                FieldValue::File { limit, check } => {
                    let text = input::read_text(&path, limit)?;
                    check(&text).map_err(|e| Failure::File {
                        path: path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                    })?;
                    text
                }
                _ => continue,
            };
            object.insert(field.name.to_owned(), Value::String(text));
        }
        object.insert("kind".into(), self.kind.name().into());
        object.insert("key_id".into(), key_id.as_str().into());
        Ok(Request::from_json(Value::Object(object))?)
    }
}

/// The kinds of `p8hsm token`.
#[derive(Debug, Clone)]
pub struct TokenKinds(pub RequestArgs);

/// The kinds of `p8hsm sign`.
#[derive(Debug, Clone)]
pub struct SignKinds(pub RequestArgs);

fn kinds(family: Family) -> impl Iterator<Item = Kind> {
    Kind::ALL
        .iter()
        .copied()
        .filter(move |k| k.spec().family == family)
}

fn augment(mut cmd: clap::Command, family: Family) -> clap::Command {
    for kind in kinds(family) {
        cmd = cmd.subcommand(kind_command(kind.spec()));
    }
    cmd.subcommand_required(true)
}

fn from_matches(matches: &ArgMatches, family: Family) -> Result<RequestArgs, clap::Error> {
    let (name, matches) = matches
        .subcommand()
        .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingSubcommand))?;
    let kind = kinds(family)
        .find(|k| k.name() == name)
        .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))?;
    Ok(request_args(kind, matches))
}

macro_rules! subcommand {
    ($type:ident, $family:expr) => {
        impl FromArgMatches for $type {
            fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
                from_matches(matches, $family).map($type)
            }

            fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(matches)?;
                Ok(())
            }
        }

        impl Subcommand for $type {
            fn augment_subcommands(cmd: clap::Command) -> clap::Command {
                augment(cmd, $family)
            }

            fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
                augment(cmd, $family)
            }

            fn has_subcommand(name: &str) -> bool {
                kinds($family).any(|k| k.name() == name)
            }
        }
    };
}

subcommand!(TokenKinds, Family::Token);
subcommand!(SignKinds, Family::Signature);

/// The option of a field: `--bundle-id` for `bundle_id`, `--request-file` for a file,
/// `--body-file` for the digest `body_sha256`.
fn long(field: &Field) -> String {
    let name = field.name.replace('_', "-");
    match field.value {
        FieldValue::File { .. } => format!("{name}-file"),
        FieldValue::Digest { .. } => {
            format!("{}-file", name.strip_suffix("-sha256").unwrap_or(&name))
        }
        _ => name,
    }
}

fn kind_command(spec: &'static Spec) -> clap::Command {
    let mut cmd = clap::Command::new(spec.name).about(spec.about).arg(
        Arg::new("key_id")
            .long("key-id")
            .value_name("ID")
            .value_parser(|s: &str| s.parse::<KeyId>())
            .help(key_id_help(spec)),
    );
    // Seconds or a duration (19m, 30d), as every duration option takes them; a negative
    // number is a value to refuse, not an option.
    let seconds = |s: &str| p8hsm::apple::renew::duration(s).map(|d| d.as_secs());
    let ttl = Arg::new("ttl")
        .long("ttl")
        .value_name("DURATION")
        .allow_negative_numbers(true)
        .value_parser(seconds);
    let skew = Arg::new("skew")
        .long("skew")
        .value_name("DURATION")
        .allow_negative_numbers(true)
        .value_parser(seconds)
        .help(format!(
            "How far iat is backdated, for clocks slightly ahead of Apple's [default: \
             {DEFAULT_SKEW}s]"
        ));
    match spec.lifetime {
        LifetimeRule::Exp { default_ttl, max } => {
            cmd = cmd
                .arg(ttl.help(format!(
                    "How long from now until exp, in seconds or e.g. 19m, 30d; ttl + skew (exp - \
                     iat) at most {max} s, so {} with the default skew [default: {default_ttl}]",
                    max.saturating_sub(DEFAULT_SKEW)
                )))
                .arg(skew);
        }
        LifetimeRule::Provider { .. } => {
            // Accepted, so that the library can say why it does not apply.
            cmd = cmd.arg(ttl.hide(true)).arg(skew);
        }
        LifetimeRule::Instant => {}
    }
    for field in spec.fields {
        cmd = cmd.arg(field_arg(field));
    }
    let json = match (spec.family, spec.jwt.is_some()) {
        (Family::Token, _) => "Print {\"token\",\"key_id\",\"issued_at\",\"expires_at\"} as JSON",
        (Family::Signature, true) => "Print {\"token\",\"key_id\",\"nonce\",\"issued_at\"} as JSON",
        (Family::Signature, false) => {
            "Print the signature (standard base64 of DER) and what was signed with it as JSON"
        }
    };
    cmd = cmd.arg(
        Arg::new("json")
            .long("json")
            .action(ArgAction::SetTrue)
            .help(json),
    );
    if spec.renewable() {
        cmd = cmd
            .arg(
                Arg::new("out")
                    .long("out")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .requires("renew_within")
                    .conflicts_with("json")
                    .help(
                        "Keep the token in FILE (mode 0600, replaced atomically), renewing it only \
                         when it is missing, not a token of this request, or expires within \
                         --renew-within; --ttl defaults to the longest allowed",
                    ),
            )
            .arg(
                Arg::new("renew_within")
                    .long("renew-within")
                    .value_name("DURATION")
                    .value_parser(p8hsm::apple::renew::window)
                    .requires("out")
                    .help("Renew when the kept token expires within DURATION, e.g. 30d, 12h"),
            )
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(clap::ArgAction::SetTrue)
                    .requires("out")
                    .help("Replace --out FILE even when it holds something other than a token"),
            );
    }
    cmd
}

/// `--key-id`'s help: the kinds of key that sign this kind.
fn key_id_help(spec: &Spec) -> String {
    let kinds: Vec<&str> = spec.key_kinds.iter().map(|k| k.name()).collect();
    format!(
        "Key ID of the signing {} key [default: from --key]",
        kinds.join(" or ")
    )
}

fn field_arg(field: &'static Field) -> Arg {
    let arg = Arg::new(field.name)
        .long(long(field))
        .help(Audience::CommandLine.help(field.help))
        .required(field.required);
    let arg = match variable(field.name) {
        Some(env) => arg.env(env),
        None => arg,
    };
    match field.value {
        FieldValue::Text { placeholder, check } => arg
            .value_name(placeholder)
            .value_parser(move |s: &str| check(s).map(|()| s.to_owned())),
        FieldValue::List { placeholder, check } => arg
            .value_name(placeholder)
            .action(ArgAction::Append)
            .value_parser(move |s: &str| check(s).map(|()| s.to_owned())),
        FieldValue::Flag => arg.action(ArgAction::SetTrue),
        FieldValue::Bool => arg
            .value_name("true|false")
            .action(ArgAction::Set)
            .value_parser(clap::value_parser!(bool)),
        FieldValue::Number { placeholder } => arg
            .value_name(placeholder)
            .value_parser(clap::value_parser!(u64)),
        FieldValue::File { .. } | FieldValue::Digest { .. } => arg
            .value_name("FILE|-")
            .value_parser(clap::value_parser!(PathBuf)),
    }
}

fn request_args(kind: Kind, matches: &ArgMatches) -> RequestArgs {
    let spec = kind.spec();
    let mut fields = Map::new();
    let mut files = Vec::new();
    let has = |id: &str| matches.try_contains_id(id).unwrap_or(false);
    for name in ["ttl", "skew"] {
        if has(name) {
            if let Some(n) = matches.get_one::<u64>(name) {
                fields.insert(name.into(), (*n).into());
            }
        }
    }
    for field in spec.fields {
        let name = field.name;
        match field.value {
            FieldValue::Text { .. } => {
                if let Some(v) = matches.get_one::<String>(name) {
                    fields.insert(name.into(), v.clone().into());
                }
            }
            FieldValue::List { .. } => {
                if let Some(values) = matches.get_many::<String>(name) {
                    fields.insert(
                        name.into(),
                        Value::Array(values.map(|v| v.clone().into()).collect()),
                    );
                }
            }
            FieldValue::Flag => {
                if matches.get_flag(name) {
                    fields.insert(name.into(), true.into());
                }
            }
            FieldValue::Bool => {
                if let Some(b) = matches.get_one::<bool>(name) {
                    fields.insert(name.into(), (*b).into());
                }
            }
            FieldValue::Number { .. } => {
                if let Some(n) = matches.get_one::<u64>(name) {
                    fields.insert(name.into(), (*n).into());
                }
            }
            FieldValue::File { .. } | FieldValue::Digest { .. } => {
                if let Some(path) = matches.get_one::<PathBuf>(name) {
                    files.push((field, path.clone()));
                }
            }
        }
    }
    let out = match (
        has("out")
            .then(|| matches.get_one::<PathBuf>("out"))
            .flatten(),
        has("renew_within")
            .then(|| matches.get_one::<Duration>("renew_within"))
            .flatten(),
    ) {
        (Some(path), Some(within)) => Some(Renewal {
            path: path.clone(),
            within: *within,
            force: has("force") && matches.get_flag("force"),
        }),
        _ => None,
    };
    // A kept token should live as long as Apple allows.
    if out.is_some() && !fields.contains_key("ttl") {
        let skew = fields.get("skew").and_then(Value::as_u64);
        if let Some(ttl) = spec.longest_ttl(skew) {
            fields.insert("ttl".into(), ttl.into());
        }
    }
    RequestArgs {
        kind,
        key_id: matches.get_one::<KeyId>("key_id").cloned(),
        fields,
        files,
        json: matches.get_flag("json"),
        out,
    }
}
