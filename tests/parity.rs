//! One classification of failures: the same command fails with the same exit status,
//! the same `error:` line and the same hint line whether it signs with the token or
//! through the agent.

use crate::common::{path_str, Agent, Hsm, ISSUER};

const IAP: &str = "ABCDEFGH12";
const DEVELOPER: &str = "DEVKEY0001";
const INDIVIDUAL: &str = "INDIV00001";
const BARE: &str = "NOMETA0001";
const TEAM: &str = "A1B2C3D4E5";

#[test]
fn every_failure_is_the_same_directly_and_through_the_agent() {
    let hsm = Hsm::new();
    for (key_id, metadata) in [
        (IAP, &["--kind", "in-app-purchase", "--issuer", ISSUER][..]),
        (DEVELOPER, &["--kind", "developer", "--team-id", TEAM]),
        (INDIVIDUAL, &["--kind", "connect-individual"]),
        (BARE, &[]),
    ] {
        let (path, _) = hsm.write_key(&format!("AuthKey_{key_id}.p8"));
        let mut args = vec!["import", path_str(&path)];
        args.extend(metadata);
        hsm.run(&args).ok();
    }
    let agent = Agent::start(&hsm, &hsm.env, &[], &[]);

    let other_issuer = "00000000-0000-4000-8000-000000000000";
    // (what fails, the arguments, the exit status)
    let cases: Vec<(&str, Vec<&str>, i32)> = vec![
        (
            "unknown key",
            vec!["token", "connect", "--key-id", "ZZZZZZZZZ1", "--individual"],
            6,
        ),
        (
            "apns with an In-App Purchase key",
            vec!["token", "apns", "--key-id", IAP, "--team-id", TEAM],
            10,
        ),
        (
            "connect with an In-App Purchase key",
            vec!["token", "connect", "--key-id", IAP, "--individual"],
            10,
        ),
        (
            "promo offer with a developer key",
            vec![
                "sign",
                "promo-offer",
                "--key-id",
                DEVELOPER,
                "--bundle-id",
                "b",
                "--product-id",
                "p",
                "--offer-id",
                "o",
            ],
            10,
        ),
        (
            "issuer contradicting the recorded one",
            vec![
                "token",
                "server",
                "--key-id",
                IAP,
                "--bundle-id",
                "b",
                "--issuer",
                other_issuer,
            ],
            10,
        ),
        (
            "Team ID contradicting the recorded one",
            vec![
                "token",
                "apns",
                "--key-id",
                DEVELOPER,
                "--team-id",
                "ZZZZZZZZZ9",
            ],
            10,
        ),
        (
            "issuer for a recorded individual key",
            vec![
                "token", "connect", "--key-id", INDIVIDUAL, "--issuer", ISSUER,
            ],
            3,
        ),
        (
            "issuer missing",
            vec!["token", "server", "--key-id", BARE, "--bundle-id", "b"],
            3,
        ),
        (
            "Team ID missing",
            vec!["token", "apns", "--key-id", BARE],
            3,
        ),
        (
            "lifetime over the limit",
            vec![
                "token",
                "connect",
                "--key-id",
                BARE,
                "--individual",
                "--ttl",
                "1200",
            ],
            3,
        ),
        (
            "long-lived scope",
            vec![
                "token",
                "connect",
                "--key-id",
                BARE,
                "--individual",
                "--ttl",
                "86400",
                "--scope",
                "GET /v1/apps",
            ],
            3,
        ),
        (
            "backdate beyond the provider token's hour",
            vec!["token", "apns", "--key-id", DEVELOPER, "--skew", "3600"],
            3,
        ),
        (
            "APNs with --ttl",
            vec!["token", "apns", "--key-id", DEVELOPER, "--ttl", "60"],
            2,
        ),
        (
            "individual with an issuer",
            vec![
                "token",
                "connect",
                "--key-id",
                BARE,
                "--individual",
                "--issuer",
                ISSUER,
            ],
            2,
        ),
        (
            "MapKit JS without an origin",
            vec!["token", "mapkit", "--key-id", DEVELOPER, "--mapkit-js"],
            3,
        ),
        (
            "legacy timestamp in seconds",
            vec![
                "sign",
                "promo-offer-legacy",
                "--key-id",
                IAP,
                "--bundle-id",
                "b",
                "--product-id",
                "p",
                "--offer-id",
                "o",
                "--timestamp",
                "1700000000",
            ],
            3,
        ),
    ];
    assert!(cases.len() >= 12);
    for (what, args, code) in &cases {
        let direct = hsm.run(args);
        let through_agent = hsm
            .command(args)
            .env("P8HSM_AGENT_SOCK", &agent.socket)
            .env_remove("P8HSM_PIN_SOURCE")
            .output()
            .unwrap();
        let agent_stderr = String::from_utf8(through_agent.stderr).unwrap();
        assert_eq!(direct.code, *code, "{what}: {}", direct.stderr);
        assert_eq!(
            through_agent.status.code(),
            Some(*code),
            "{what} through the agent: {agent_stderr}"
        );
        assert!(
            direct.stderr.starts_with("error: "),
            "{what}: {}",
            direct.stderr
        );
        // The same error line; the hint is said to its audience: options on the command
        // line, the request's fields by the agent.
        assert_eq!(
            direct.stderr.lines().next(),
            agent_stderr.lines().next(),
            "{what}: the same error line"
        );
        assert_eq!(
            direct.stderr.lines().count(),
            agent_stderr.lines().count(),
            "{what}: a hint both ways, or neither: {} / {agent_stderr}",
            direct.stderr
        );
        assert!(
            direct.stdout.is_empty() && through_agent.stdout.is_empty(),
            "{what}"
        );
    }
    // The failures the agent decides (key, metadata) carry a hint through it too.
    let hinted = cases
        .iter()
        .filter(|(_, args, _)| hsm.run(args).stderr.lines().count() == 2)
        .count();
    assert!(hinted >= 5, "{hinted} failures with a hint");
}
