//! One classification of failures, pinned by the table of refusals in
//! `common/examples.rs`: the command line prints exactly its `error:` and `hint:` lines
//! and exits with its status; through the agent the same status and error line (the hint
//! said to a program: fields, never options); and the agent's reply carries its code,
//! message and protocol hint, exactly.

use crate::common::examples::{KEYS, MORE_KEYS, REFUSALS};
use crate::common::{Agent, Hsm};

#[test]
fn every_refusal_is_said_exactly_directly_and_through_the_agent() {
    let hsm = Hsm::new();
    for key in KEYS.iter().chain(MORE_KEYS) {
        key.import(&hsm);
    }
    let agent = Agent::start(&hsm, &hsm.env, &[], &[]);
    assert!(REFUSALS.len() >= 12);
    for refusal in REFUSALS {
        let what = refusal.what;
        let direct = hsm.run(refusal.args);
        let mut expected = format!("error: {}\n", refusal.error);
        if let Some(hint) = refusal.hint {
            expected.push_str(hint);
            expected.push('\n');
        }
        assert_eq!(direct.stderr, expected, "{what}: the command line's lines");
        assert_eq!(direct.code, refusal.exit, "{what}");
        assert_eq!(direct.stdout, "", "{what}");

        let through = hsm
            .command(refusal.args)
            .env("P8HSM_AGENT_SOCK", &agent.socket)
            .env_remove("P8HSM_PIN_SOURCE")
            .output()
            .unwrap();
        let stderr = String::from_utf8(through.stderr).unwrap();
        assert_eq!(
            through.status.code(),
            Some(refusal.exit),
            "{what}: {stderr}"
        );
        assert_eq!(
            stderr.lines().next(),
            direct.stderr.lines().next(),
            "{what}"
        );
        assert!(through.stdout.is_empty(), "{what}");

        refusal.answered(&agent.request(&(refusal.request)()));
    }
}
