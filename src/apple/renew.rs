//! Long-lived tokens kept in a file and renewed before they lapse: whether a kept
//! token may stay, or why it must be signed anew. Pure: the caller reads the file, and
//! supplies the key's public key, what is recorded with it, and the time.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::PublicKey;
use serde_json::{Map, Value};

use super::check::verify_signature;
use super::lifetime::unix;
use super::metadata::KeyMetadata;
use super::spec::LifetimeRule;
use super::JwtRequest;
use crate::Error;

/// What to do with a kept token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It may stay: a token of this request, signed by its key, that does not expire
    /// within the renewal window.
    Keep {
        /// Its `exp`, UNIX seconds.
        expires_at: u64,
    },
    /// Sign a new one, because of `reason`.
    Renew {
        /// Why, in a few words ("it expires within 30days").
        reason: String,
    },
}

/// The claims that differ between two tokens of one request.
const PER_TOKEN: [&str; 3] = ["iat", "exp", "jti"];

/// Whether `kept` (a file's text, `None` when there is no file) may stay as the token of
/// `request` at `now`: it must verify with `public`, carry the header and claims
/// `request` would (times and `jti` aside), have been issued before `now`, and not
/// expire within `within`.
pub fn decide(
    kept: Option<&str>,
    request: &JwtRequest,
    meta: Option<&KeyMetadata>,
    public: &PublicKey,
    now: SystemTime,
    within: Duration,
) -> Result<Decision, Error> {
    let renew = |reason: &str| {
        Ok(Decision::Renew {
            reason: reason.to_owned(),
        })
    };
    let spec = request.params().kind().spec();
    let LifetimeRule::Exp { max, .. } = spec.lifetime else {
        return Err(Error::NotApplicable {
            field: "kind",
            reason: format!("{} tokens are not kept in files", spec.api),
        });
    };
    // What this request would sign now: its header and claims, resolved against what is
    // recorded with the key (and refused as signing would refuse it).
    let expected = request.jwt(meta, now)?;
    let want_header = match serde_json::to_value(expected.header(request.key_id().as_str())) {
        Ok(Value::Object(header)) => header,
        _ => return Err(Error::internal("a JOSE header is not a JSON object")),
    };
    let now = unix(now)?;
    let Some(kept) = kept else {
        return renew("none was kept");
    };
    let kept = kept.strip_suffix('\n').unwrap_or(kept);
    let Some((header, claims)) = parts(kept) else {
        return renew("it is not a JWT");
    };
    if !verify_signature(kept, public) {
        return renew("its signature does not verify with the key");
    }
    if header != want_header {
        return renew("its header is not this request's");
    }
    if without(&claims, &PER_TOKEN) != without(&expected.claims, &PER_TOKEN) {
        return renew("its claims are not this request's");
    }
    let time = |name| claims.get(name).and_then(Value::as_u64);
    let (Some(iat), Some(exp)) = (time("iat"), time("exp")) else {
        return renew("it has no iat or exp");
    };
    if iat > now {
        return renew("it was issued in the future");
    }
    if exp.saturating_sub(iat) > max {
        return renew("it lives longer than Apple allows");
    }
    if exp <= now.saturating_add(within.as_secs()) {
        return renew(&format!("it expires within {}", span(within)));
    }
    Ok(Decision::Keep { expires_at: exp })
}

/// Reads a duration as people write it: seconds (`1140`) or with a unit (`19m`, `12h`,
/// `30d`, `2w`); every duration the command line takes is read so.
pub fn duration(s: &str) -> Result<Duration, Error> {
    let parsed = match s.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(s),
    };
    parsed.map_err(|_| Error::InvalidId {
        what: "duration",
        value: crate::ids::printable(s),
        rule: "give seconds (1140) or a duration such as 19m, 12h or 30d",
    })
}

/// Reads a renewal window: a [`duration`] over zero.
pub fn window(s: &str) -> Result<Duration, Error> {
    match duration(s)? {
        window if window.as_secs() > 0 => Ok(window),
        _ => Err(Error::InvalidId {
            what: "duration",
            value: crate::ids::printable(s),
            rule: "a renewal window is over zero, e.g. 30d or 12h",
        }),
    }
}

/// A duration as people write it: `30 days`, `12 h`, `90 s`.
pub fn span(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => "0 s".to_owned(),
        s if s % 86_400 == 0 => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The decoded header and claims of a compact JWS.
fn parts(token: &str) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let mut it = token.split('.');
    let mut next = || -> Option<Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(it.next()?).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let decoded = (next()?, next()?);
    (it.next().is_some() && it.next().is_none()).then_some(decoded)
}

fn without(map: &Map<String, Value>, names: &[&str]) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_written_with_a_unit() {
        assert_eq!(duration("1140").unwrap(), Duration::from_secs(1140));
        assert_eq!(duration("19m").unwrap(), Duration::from_secs(1140));
        assert_eq!(window("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(window("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert!(duration("-5").is_err() && window("0").is_err() && duration("soon").is_err());
    }
    use crate::apple::developer::SignInWithApple;
    use crate::apple::tests::{now, NOW};
    use crate::apple::JwtParams;
    use crate::jws::tests::MemorySigner;
    use crate::Es256Signer;
    use p256::ecdsa::SigningKey;

    const DAY: u64 = 86_400;

    fn request(client: &str, ttl: u64) -> JwtRequest {
        JwtRequest::new(
            "2X9R4HXF34".parse().unwrap(),
            JwtParams::SignInWithApple(SignInWithApple {
                team_id: Some("A1B2C3D4E5".parse().unwrap()),
                client_id: client.parse().unwrap(),
            }),
            Some(ttl),
            Some(60),
        )
        .unwrap()
    }

    fn at(seconds: u64) -> SystemTime {
        now() + Duration::from_secs(seconds)
    }

    #[test]
    fn a_kept_token_stays_until_the_window_then_is_renewed() {
        let signer = MemorySigner::new();
        let public = signer.key.verifying_key().into();
        let request = request("com.example.web", 90 * DAY);
        let token = request.sign(&signer, None, now()).unwrap().token;
        let decide = |kept: Option<&str>, later: u64, within: u64| {
            decide(
                kept,
                &request,
                None,
                &public,
                at(later),
                Duration::from_secs(within * DAY),
            )
            .unwrap()
        };
        assert_eq!(
            decide(Some(&format!("{token}\n")), 0, 30),
            Decision::Keep {
                expires_at: NOW + 90 * DAY
            }
        );
        assert_eq!(
            decide(Some(&token), 59 * DAY, 30),
            Decision::Keep {
                expires_at: NOW + 90 * DAY
            }
        );
        assert!(matches!(
            decide(Some(&token), 61 * DAY, 30),
            Decision::Renew { .. }
        ));
        assert!(matches!(decide(None, 0, 30), Decision::Renew { .. }));
        assert!(matches!(
            decide(Some("garbage"), 0, 30),
            Decision::Renew { .. }
        ));
    }

    #[test]
    fn a_token_from_the_future_or_living_too_long_is_renewed() {
        let signer = MemorySigner::new();
        let public = signer.key.verifying_key().into();
        let request = request("com.example.web", 90 * DAY);
        let later = request.sign(&signer, None, at(DAY)).unwrap().token;
        let decide = |kept: &str| {
            decide(Some(kept), &request, None, &public, now(), Duration::ZERO).unwrap()
        };
        assert_eq!(
            decide(&later),
            Decision::Renew {
                reason: "it was issued in the future".to_owned()
            }
        );
        // The same claims with exp - iat over Apple's limit, signed by the key.
        let (input, _) = later.rsplit_once('.').unwrap();
        let (header, claims) = input.split_once('.').unwrap();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        claims["iat"] = (NOW - 60).into();
        claims["exp"] = (NOW - 60 + 200 * DAY).into();
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature: p256::ecdsa::Signature = signer.sign_es256(input.as_bytes()).unwrap();
        let long = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        assert_eq!(
            decide(&long),
            Decision::Renew {
                reason: "it lives longer than Apple allows".to_owned()
            }
        );
    }

    #[test]
    fn a_token_of_another_request_or_key_or_tampered_with_is_renewed() {
        let signer = MemorySigner::new();
        let public = signer.key.verifying_key().into();
        let mine = request("com.example.web", 90 * DAY);
        let other_client = request("com.example.other", 90 * DAY)
            .sign(&signer, None, now())
            .unwrap()
            .token;
        let other_key = MemorySigner {
            key: SigningKey::from_slice(&[0x22; 32]).unwrap(),
            ..MemorySigner::new()
        };
        let foreign = mine.sign(&other_key, None, now()).unwrap().token;
        let good = mine.sign(&signer, None, now()).unwrap().token;
        let (input, _) = good.rsplit_once('.').unwrap();
        let bad_signature = format!("{input}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
        for (kept, why) in [
            (other_client, "its claims are not this request's"),
            (foreign, "its signature does not verify with the key"),
            (bad_signature, "its signature does not verify with the key"),
        ] {
            assert_eq!(
                decide(Some(&kept), &mine, None, &public, now(), Duration::ZERO).unwrap(),
                Decision::Renew {
                    reason: why.to_owned()
                }
            );
        }
    }
}
