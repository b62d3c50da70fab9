//! The documents stay true: `docs/protocol.md` lists every kind and field the library
//! takes (generated here from the kinds' specs), and every `p8hsm` command the docs show
//! exists.

use std::path::Path;

use p8hsm::apple::spec::{LifetimeRule, Value, DEFAULT_SKEW};
use p8hsm::apple::Kind;
use p8hsm::KeyIdFormat;

use crate::common::root;

/// The protocol's field tables, as `docs/protocol.md` must carry them.
fn field_tables() -> String {
    let mut out =
        String::from("<!-- fields: generated from the kinds' specs; tests/docs.rs checks it -->\n");
    for kind in Kind::ALL {
        let spec = kind.spec();
        out.push_str(&format!(
            "\n#### `{}` — {}\n\n| field | type | required | meaning |\n|---|---|---|---|\n",
            spec.name, spec.about
        ));
        let forms: Vec<&str> = spec
            .key_kinds
            .iter()
            .map(|k| match k.key_id_format() {
                KeyIdFormat::Apple => "10 characters A-Z, 0-9",
                KeyIdFormat::Uuid => "a UUID",
                KeyIdFormat::Hex => "32 to 128 hexadecimal digits",
            })
            .collect();
        out.push_str(&format!(
            "| `key_id` | string | yes | key ID of the signing key ({}) |\n",
            forms[0]
        ));
        match spec.lifetime {
            LifetimeRule::Exp { default_ttl, max } => {
                out.push_str(&format!(
                    "| `ttl` | integer | no | seconds from now until `exp` (default {default_ttl}; `exp - iat` at most {max}) |\n"
                ));
                out.push_str(&format!(
                    "| `skew` | integer | no | seconds `iat` is backdated (default {DEFAULT_SKEW}) |\n"
                ));
            }
            LifetimeRule::Provider { validity } => out.push_str(&format!(
                "| `skew` | integer | no | seconds `iat` is backdated (default {DEFAULT_SKEW}; under {validity}) |\n"
            )),
            LifetimeRule::Instant => {}
        }
        for field in spec.fields {
            let kind = match &field.value {
                Value::Text { placeholder, .. } => format!("string ({placeholder})"),
                Value::List { placeholder, .. } => format!("array of strings ({placeholder})"),
                Value::Flag => "boolean (default false)".to_owned(),
                Value::Bool => "boolean".to_owned(),
                Value::Number { placeholder } => format!("integer ({placeholder})"),
                Value::File { limit, .. } => format!("string (at most {limit} bytes)"),
                Value::Digest { .. } => "string (standard base64 of SHA-256)".to_owned(),
            };
            out.push_str(&format!(
                "| `{}` | {kind} | {} | {} |\n",
                field.name,
                if field.required { "yes" } else { "no" },
                // A field named in braces is written as the protocol names it.
                field.help.replace('|', "\\|").replace(['{', '}'], "`")
            ));
        }
    }
    out.push_str("\n<!-- end of fields -->\n");
    out
}

#[test]
fn the_protocol_document_lists_every_kind_and_field() {
    let doc = std::fs::read_to_string(root().join("docs/protocol.md")).unwrap();
    let expected = field_tables();
    if !doc.contains(&expected) {
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("protocol-fields.md");
        std::fs::write(&out, &expected).unwrap();
        panic!(
            "docs/protocol.md does not carry the field tables the specs give; the expected \
             block is in {}",
            out.display()
        );
    }
}

#[test]
fn every_command_the_documents_show_exists() {
    let help = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_p8hsm"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap()
            .status
            .success()
    };
    let mut checked = 0;
    for doc in [
        "README.md",
        "docs/manual.md",
        "docs/kinds.md",
        "docs/security.md",
        "docs/ci.md",
        "docs/serve.md",
        "docs/tokens.md",
    ] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        let mut in_code = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if !in_code {
                continue;
            }
            // Shell comments are prose.
            let line = line.split_once('#').map_or(line, |(code, _)| code);
            // Each `p8hsm …` on the line: at its start, or after a space, `(` or `|`.
            for (at, _) in line.match_indices("p8hsm ") {
                let before = line[..at].chars().last();
                if !matches!(before, None | Some(' ' | '(' | '|')) {
                    continue;
                }
                // The command and its subcommand, before any option or argument.
                let words: Vec<&str> = line[at + 6..]
                    .split_whitespace()
                    .take_while(|w| {
                        !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    })
                    .take(2)
                    .collect();
                if words.is_empty() {
                    continue;
                }
                assert!(
                    help(&words),
                    "{doc}: `p8hsm {}` is not a command",
                    words.join(" ")
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "{checked} commands checked");
    assert!(Path::new(&root().join("docs/benchmarks.md")).is_file());
}
