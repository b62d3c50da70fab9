//! Every kind from its one line of test data (`common/examples.rs`): signed on the
//! command line and through the agent, the two results alike, JWTs verified with the key
//! and clean by `check`. A kind without its line fails here: adding a kind is its module,
//! its entry in the list of kinds, and its line of test data.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::examples::{EXAMPLES, KEYS, REQUEST};
use crate::common::{verify_jwt, Agent, Hsm};

#[test]
fn every_kind_has_its_example_and_every_key_kind_a_key() {
    let kinds: BTreeSet<&str> = p8hsm::apple::Kind::ALL.iter().map(|k| k.name()).collect();
    let examples: BTreeSet<&str> = EXAMPLES.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds, examples,
        "one example per kind, in tests/common/examples.rs"
    );
    let key_kinds: BTreeSet<&str> = p8hsm::apple::metadata::KeyKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|k| *k != "connect-individual")
        .collect();
    let keys: BTreeSet<&str> = KEYS.iter().map(|k| k.kind).collect();
    assert_eq!(
        key_kinds, keys,
        "a key of each kind that records its identities"
    );
}

#[test]
fn every_kind_signs_its_example_alike_on_the_command_line_and_through_the_agent() {
    let hsm = Hsm::new();
    let mut secrets = Vec::new();
    for key in KEYS {
        secrets.push((key.key_id, key.import(&hsm)));
    }
    let request_file = hsm.dir.path().join("request.json");
    std::fs::write(&request_file, REQUEST).unwrap();
    let agent = Agent::start(&hsm, &hsm.env, &[], &[]);
    for example in EXAMPLES {
        let kind = p8hsm::apple::Kind::from_name(example.kind).unwrap();
        let family = kind.spec().family.command();
        let mut args = vec![family, example.kind, "--key-id", example.key_id, "--json"];
        args.extend(example.args.iter().map(|a| {
            if *a == "{request.json}" {
                request_file.to_str().unwrap()
            } else {
                a
            }
        }));
        let cli: Value = serde_json::from_str(&hsm.run(&args).ok()).unwrap();
        let mut request = (example.fields)();
        request["kind"] = example.kind.into();
        request["key_id"] = example.key_id.into();
        let reply = agent.request(&request);
        assert_eq!(reply["ok"], true, "{}: {reply}", example.kind);
        let agent = &reply["result"];
        let fields =
            |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(
            fields(&cli),
            fields(agent),
            "{}: the same result",
            example.kind
        );
        assert_eq!(cli["key_id"], example.key_id, "{}", example.kind);
        let Some(token) = cli["token"].as_str() else {
            continue; // a signature that is not a JWT (legacy offers, CloudKit)
        };
        let secret = &secrets
            .iter()
            .find(|(id, _)| *id == example.key_id)
            .unwrap()
            .1;
        let (_, claims) = verify_jwt(token, secret);
        let (_, agent_claims) = verify_jwt(agent["token"].as_str().unwrap(), secret);
        let per_token = ["iat", "exp", "jti", "nonce"];
        let same = |c: &Value| -> Vec<(String, Value)> {
            c.as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !per_token.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(
            same(&claims),
            same(&agent_claims),
            "{}: the same claims",
            example.kind
        );
        // Checked as the kind it is, and as whatever kind `check` tells it to be.
        for named in [Some(example.kind), None] {
            let mut args = vec!["check", token, "--key-id", example.key_id];
            args.extend(named.map(|k| ["--kind", k]).into_iter().flatten());
            let check = hsm.run(&args);
            assert_eq!(
                check.code, 0,
                "{} ({named:?}): {}",
                example.kind, check.stdout
            );
        }
    }
}
