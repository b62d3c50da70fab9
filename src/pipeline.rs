//! The one request pipeline every long-lived front end is a transport over: the gate
//! (who may ask for what) → signing, from the cache where it may → the audit record.
//! The agent (a unix socket, its peers' uids and `--keys`) and the service (HTTPS,
//! certificates and a policy) differ only in how a request arrives, which [`Gate`] they
//! hold, what they add to the audit record (a uid, or a certificate's names) and how the
//! reply travels; what is decided, signed and recorded is decided here, once.
//!
//! The pipeline does no I/O of its own: it returns the [`Record`] to write, and the
//! transport hands the token out only once the record is written.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::apple::cache::Source;
use crate::apple::metadata::KeyMetadata;
use crate::{Error, Request, Service, Signed};

/// Who may ask for what: one caller's rights (the agent's keys for a peer, a policy's
/// entry for a certificate).
pub trait Gate {
    /// How a front end reports a refusal (and any other failure).
    type Refusal: From<Error>;

    /// The caller, as audit lines and the cache's fairness name it (`uid:1000`,
    /// `cn:billing`).
    fn caller(&self) -> &str;

    /// Refuses a request this caller may not make. `recorded` gives what is recorded
    /// with the key, looked up only when the decision needs it (its failure is returned
    /// as it is).
    fn allow(
        &self,
        request: &Request,
        recorded: &dyn Fn() -> Result<Option<Arc<KeyMetadata>>, Error>,
    ) -> Result<(), Self::Refusal>;

    /// Why the gate refused, in a few words for the audit line; `None` for a failure
    /// that was no decision of the gate's (the key's metadata could not be read).
    fn reason(refusal: &Self::Refusal) -> Option<String>;
}

/// What a request came to: the result to reply with, and the audit line to write before
/// a token is handed out.
pub struct Outcome<R> {
    /// The token and where it came from, or why not.
    pub result: Result<(Signed, Source), R>,
    /// The audit line: for a token handed out, or a request the gate refused.
    pub record: Option<Record>,
}

/// An audit line, as the pipeline knows it; the transport adds what only it knows
/// (`peer_uid`, `peer_addr`, `names`) and writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A token handed out.
    Signed {
        /// `key_id`, `kind`, `aud`, `claims_sha256`, `caller`, `source`, in that order
        /// (a log that is to hold whole tokens takes the token from the result).
        fields: Vec<(&'static str, String)>,
    },
    /// A request the gate refused.
    Refused {
        /// Whose refusals these are, for pacing them: the caller.
        who: String,
        /// `caller`, `kind`, `reason`.
        fields: Vec<(&'static str, String)>,
    },
}

/// Answers `request` for the caller `gate` stands for without calling the token, when
/// that is possible: the key's metadata was looked up before and the gate refuses, or
/// the cache holds the token. `None`: call [`answer`] (off any thread that must not
/// block).
pub fn answer_now<G: Gate>(
    service: &Service,
    gate: &G,
    request: &Request,
) -> Option<Outcome<G::Refusal>> {
    let meta = service.metadata_known(request.key_id())?;
    if let Err(refusal) = gate.allow(request, &|| Ok(meta.clone())) {
        return Some(refused(gate, request, refusal));
    }
    let signed = service.cached(request)?;
    Some(handed_out(gate, request, signed, Source::Hit))
}

/// Answers `request` for the caller `gate` stands for: asks the gate, signs (from the
/// cache where it may), and makes the audit record.
pub fn answer<G: Gate>(service: &Service, gate: &G, request: &Request) -> Outcome<G::Refusal> {
    if let Err(refusal) = gate.allow(request, &|| service.metadata(request.key_id())) {
        return refused(gate, request, refusal);
    }
    match service.sign_for(request, gate.caller()) {
        Ok((signed, source)) => handed_out(gate, request, signed, source),
        Err(e) => Outcome {
            result: Err(e.into()),
            record: None,
        },
    }
}

fn refused<G: Gate>(gate: &G, request: &Request, refusal: G::Refusal) -> Outcome<G::Refusal> {
    let Some(reason) = G::reason(&refusal) else {
        return Outcome {
            result: Err(refusal),
            record: None,
        };
    };
    Outcome {
        result: Err(refusal),
        record: Some(Record::Refused {
            who: gate.caller().to_owned(),
            fields: vec![
                ("caller", gate.caller().to_owned()),
                ("kind", request.kind().name().to_owned()),
                ("reason", reason),
            ],
        }),
    }
}

fn handed_out<G: Gate>(
    gate: &G,
    request: &Request,
    signed: Signed,
    source: Source,
) -> Outcome<G::Refusal> {
    let token = signed.line();
    let payload = token.split('.').nth(1).unwrap_or(token);
    let digest = base16ct::lower::encode_string(&Sha256::digest(payload.as_bytes()));
    // The audience the kind's tokens carry (the one `check` holds them to).
    let aud = request.spec().jwt.and_then(|jwt| jwt.aud).unwrap_or("-");
    let fields = vec![
        ("key_id", request.key_id().to_string()),
        ("kind", request.spec().command()),
        ("aud", aud.to_owned()),
        ("claims_sha256", digest),
        ("caller", gate.caller().to_owned()),
        ("source", source.name().to_owned()),
    ];
    Outcome {
        result: Ok((signed, source)),
        record: Some(Record::Signed { fields }),
    }
}
