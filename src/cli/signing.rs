//! Signing a `token` or `sign` request: one path for the CLI, which signs once, and for
//! the agent, which keeps the token open and a cache in front of it.

use std::time::SystemTime;

use p8hsm::apple::cache::{Cacheable, Source, TokenCache};
use p8hsm::apple::connect::{ConnectToken, EnterpriseToken, Issuer};
use p8hsm::apple::developer::{
    MapKitToken, MusicKitToken, ProviderService, ProviderToken, SignInWithAppleToken,
    WeatherKitToken,
};
use p8hsm::apple::metadata::{KeyKind, KeyMetadata};
use p8hsm::apple::server::{ServerApi, ServerToken};
use p8hsm::apple::storekit::{
    AdvancedCommerceRequest, LegacyPromotionalOffer, LegacySignature, SignedStoreKit,
    StoreKitRequest, StoreKitSignature,
};
use p8hsm::apple::{Lifetime, SignedToken};
use p8hsm::{Error, Es256Signer, IssuerId, KeyId, TeamId, Token};
use serde::{Deserialize, Serialize};

use super::args::{SignCommand, StoreKitArgs, TeamArgs, TokenArgs, TokenCommand};

/// A request to sign: the `token` and `sign` commands, as the CLI parses them and as
/// the agent's protocol carries them (`{"command":"token","kind":"connect",…}`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Call {
    /// `p8hsm token KIND`.
    Token(TokenCommand),
    /// `p8hsm sign KIND`.
    Sign(SignCommand),
}

/// What a call produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Signed {
    /// A JWT.
    Token(SignedToken),
    /// A StoreKit JWS.
    StoreKit(SignedStoreKit),
    /// A legacy promotional offer signature.
    Legacy(LegacySignature),
}

impl Signed {
    /// The line the CLI prints without --json.
    pub fn line(&self) -> &str {
        match self {
            Signed::Token(t) => &t.token,
            Signed::StoreKit(t) => &t.token,
            Signed::Legacy(s) => &s.signature,
        }
    }
}

const IAP: &[KeyKind] = &[KeyKind::InAppPurchase];

impl Call {
    /// The Apple key ID the call names, if any (else it comes from a --key URI).
    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Call::Token(command) => describe(command).1.key_id.as_ref(),
            Call::Sign(SignCommand::PromoOffer(a)) => a.common.key_id.as_ref(),
            Call::Sign(SignCommand::IntroOfferEligibility(a)) => a.common.key_id.as_ref(),
            Call::Sign(SignCommand::AdvancedCommerceRequest(a)) => a.common.key_id.as_ref(),
            Call::Sign(SignCommand::PromoOfferLegacy(a)) => a.key_id.as_ref(),
        }
    }

    /// Sets the Apple key ID (resolved from a URI) so the call is complete on its own.
    pub fn set_key_id(&mut self, key_id: KeyId) {
        let slot = match self {
            Call::Token(command) => &mut describe_mut(command).key_id,
            Call::Sign(SignCommand::PromoOffer(a)) => &mut a.common.key_id,
            Call::Sign(SignCommand::IntroOfferEligibility(a)) => &mut a.common.key_id,
            Call::Sign(SignCommand::AdvancedCommerceRequest(a)) => &mut a.common.key_id,
            Call::Sign(SignCommand::PromoOfferLegacy(a)) => &mut a.key_id,
        };
        *slot = Some(key_id);
    }

    /// Whether the result is printed as JSON.
    pub fn json(&self) -> bool {
        match self {
            Call::Token(command) => describe(command).1.json,
            Call::Sign(SignCommand::PromoOffer(a)) => a.common.json,
            Call::Sign(SignCommand::IntroOfferEligibility(a)) => a.common.json,
            Call::Sign(SignCommand::AdvancedCommerceRequest(a)) => a.common.json,
            Call::Sign(SignCommand::PromoOfferLegacy(a)) => a.json,
        }
    }

    /// The command's name, e.g. `token apns`, and the key kinds it may use.
    pub fn name(&self) -> (String, &'static [KeyKind]) {
        match self {
            Call::Token(command) => {
                let (name, _, allowed) = describe(command);
                (name.to_owned(), allowed)
            }
            Call::Sign(command) => (
                match command {
                    SignCommand::PromoOffer(_) => "sign promo-offer",
                    SignCommand::IntroOfferEligibility(_) => "sign intro-offer-eligibility",
                    SignCommand::AdvancedCommerceRequest(_) => "sign advanced-commerce-request",
                    SignCommand::PromoOfferLegacy(_) => "sign promo-offer-legacy",
                }
                .to_owned(),
                IAP,
            ),
        }
    }

    /// Refuses, before any PIN is read, a request that breaks Apple's rules and needs
    /// nothing recorded with the key to tell.
    pub fn precheck(&self, key_id: &KeyId) -> Result<(), Error> {
        if let Call::Token(command) = self {
            check_ttl(command)?;
            if let Ok(request) = build_token(command, key_id, None) {
                request.times(SystemTime::now())?;
            }
        }
        Ok(())
    }

    /// Signs with `key` (whose recorded metadata is `meta`), through `cache` where the
    /// result may be reused. StoreKit signatures are never cached.
    pub fn sign(
        &self,
        key: &dyn Es256Signer,
        meta: Option<&KeyMetadata>,
        cache: Option<&TokenCache>,
    ) -> Result<(Signed, Source), Error> {
        let key_id = key.key_id();
        let now = SystemTime::now();
        match self {
            Call::Token(command) => {
                check_ttl(command)?;
                let request = build_token(command, key_id, meta)?;
                let (signed, source) = match cache {
                    Some(cache) => cache.get_with_source(request.as_ref(), key)?,
                    None => (request.sign(key, now)?, Source::Fresh),
                };
                Ok((Signed::Token(signed), source))
            }
            Call::Sign(SignCommand::PromoOfferLegacy(a)) => {
                let offer = LegacyPromotionalOffer {
                    bundle_id: a.bundle_id.clone(),
                    product_id: a.product_id.clone(),
                    offer_id: a.offer_id.clone(),
                    app_account_token: a.app_account_token.clone(),
                    nonce: a.nonce.clone(),
                    timestamp_ms: a.timestamp,
                };
                Ok((Signed::Legacy(offer.sign(key, now)?), Source::Fresh))
            }
            Call::Sign(command) => {
                let (common, request) = storekit_request(command)?;
                let signature = StoreKitSignature {
                    issuer: issuer(&common.issuer, meta, key_id)?,
                    bundle_id: common.bundle_id.clone(),
                    request,
                    nonce: common.nonce.clone(),
                };
                Ok((Signed::StoreKit(signature.sign(key, now)?), Source::Fresh))
            }
        }
    }
}

/// APNs and DeviceCheck tokens carry no exp.
fn check_ttl(command: &TokenCommand) -> Result<(), Error> {
    match command {
        TokenCommand::Apns(a) | TokenCommand::Devicecheck(a) if a.common.ttl.is_some() => {
            Err(Error::InvalidOption {
                reason: "APNs and DeviceCheck tokens carry no exp (Apple accepts them for an hour): --ttl does not apply".to_owned(),
            })
        }
        _ => Ok(()),
    }
}

fn storekit_request(command: &SignCommand) -> Result<(&StoreKitArgs, StoreKitRequest), Error> {
    Ok(match command {
        SignCommand::PromoOffer(a) => (
            &a.common,
            StoreKitRequest::PromotionalOffer {
                product_id: a.product_id.clone(),
                offer_id: a.offer_id.clone(),
                transaction_id: a.transaction_id.clone(),
            },
        ),
        SignCommand::IntroOfferEligibility(a) => (
            &a.common,
            StoreKitRequest::IntroductoryOfferEligibility {
                product_id: a.product_id.clone(),
                allow_introductory_offer: a.allow_intro_offer,
                transaction_id: a.transaction_id.clone(),
            },
        ),
        SignCommand::AdvancedCommerceRequest(a) => {
            let json = a.request.as_deref().ok_or(Error::MissingInput {
                what: "request",
                why: "an Advanced Commerce signature signs a JSON request body",
            })?;
            (
                &a.common,
                StoreKitRequest::AdvancedCommerce {
                    request: AdvancedCommerceRequest::new(json)?,
                },
            )
        }
        SignCommand::PromoOfferLegacy(_) => unreachable!("legacy offers are not JWS"),
    })
}

fn describe_mut(command: &mut TokenCommand) -> &mut TokenArgs {
    use TokenCommand::*;
    match command {
        Connect(a) => &mut a.common,
        Server(a) | ExternalPurchase(a) | AdvancedCommerce(a) | RetentionMessaging(a) => {
            &mut a.common
        }
        Enterprise(a) => &mut a.common,
        Apns(a) | Devicecheck(a) => &mut a.common,
        SignInWithApple(a) => &mut a.team.common,
        Musickit(a) => &mut a.team.common,
        Weatherkit(a) => &mut a.team.common,
        Mapkit(a) => &mut a.team.common,
    }
}

/// The key's recorded metadata, read from the token.
pub fn read_metadata(token: &Token, key_id: &KeyId) -> Result<Option<KeyMetadata>, Error> {
    token
        .key_metadata(key_id)?
        .map(|bytes| KeyMetadata::from_bytes(key_id, &bytes))
        .transpose()
}

/// The command's name, its common options and the key kinds it may use.
pub fn describe(command: &TokenCommand) -> (&'static str, &TokenArgs, &'static [KeyKind]) {
    use TokenCommand::*;
    const IAP: &[KeyKind] = &[KeyKind::InAppPurchase];
    const DEV: &[KeyKind] = &[KeyKind::Developer];
    match command {
        Connect(a) => (
            "token connect",
            &a.common,
            &[KeyKind::Connect, KeyKind::ConnectIndividual],
        ),
        Server(a) => ("token server", &a.common, IAP),
        ExternalPurchase(a) => ("token external-purchase", &a.common, IAP),
        AdvancedCommerce(a) => ("token advanced-commerce", &a.common, IAP),
        RetentionMessaging(a) => ("token retention-messaging", &a.common, IAP),
        Enterprise(a) => ("token enterprise", &a.common, &[KeyKind::Enterprise]),
        Apns(a) => ("token apns", &a.common, DEV),
        Devicecheck(a) => ("token devicecheck", &a.common, DEV),
        SignInWithApple(a) => ("token sign-in-with-apple", &a.team.common, DEV),
        Musickit(a) => ("token musickit", &a.team.common, DEV),
        Weatherkit(a) => ("token weatherkit", &a.team.common, DEV),
        Mapkit(a) => ("token mapkit", &a.team.common, DEV),
    }
}

/// The key's recorded metadata, refusing a command for another kind of key.
pub fn metadata(
    token: &Token,
    key_id: &KeyId,
    command: &str,
    allowed: &[KeyKind],
) -> Result<Option<KeyMetadata>, Error> {
    let meta = read_metadata(token, key_id)?;
    if let Some(meta) = &meta {
        meta.allow(key_id, command, allowed)?;
    }
    Ok(meta)
}

pub fn build_token(
    command: &TokenCommand,
    key_id: &KeyId,
    meta: Option<&KeyMetadata>,
) -> Result<Box<dyn Cacheable>, Error> {
    use TokenCommand::*;
    let (_, common, _) = describe(command);
    let lifetime = |default_ttl: u64| Lifetime {
        ttl: common.ttl.unwrap_or(default_ttl),
        skew: common.skew,
    };
    let server =
        |api: ServerApi, a: &super::args::InAppPurchaseArgs| -> Result<Box<dyn Cacheable>, Error> {
            Ok(Box::new(ServerToken {
                api,
                issuer: issuer(&a.issuer, meta, key_id)?,
                bundle_id: a.bundle_id.clone(),
                lifetime: lifetime(600),
            }))
        };
    Ok(match command {
        Connect(a) => {
            let individual = match meta.map(|m| m.kind) {
                Some(KeyKind::ConnectIndividual) if a.issuer.is_some() => {
                    return Err(Error::InvalidMetadata(format!(
                        "key {key_id} is recorded as an individual key: its tokens carry sub \"user\", not --issuer"
                    )))
                }
                Some(KeyKind::Connect) if a.individual => {
                    return Err(Error::InvalidMetadata(format!(
                        "key {key_id} is recorded as a team key: drop --individual"
                    )))
                }
                Some(kind) => kind == KeyKind::ConnectIndividual,
                None => a.individual,
            };
            Box::new(ConnectToken {
                issuer: if individual {
                    Issuer::Individual
                } else {
                    Issuer::Team(issuer(&a.issuer, meta, key_id)?)
                },
                scope: a.scope.clone(),
                lifetime: lifetime(600),
            })
        }
        Server(a) => server(ServerApi::AppStoreServer, a)?,
        ExternalPurchase(a) => server(ServerApi::ExternalPurchase, a)?,
        AdvancedCommerce(a) => server(ServerApi::AdvancedCommerce, a)?,
        RetentionMessaging(a) => server(ServerApi::RetentionMessaging, a)?,
        Enterprise(a) => Box::new(EnterpriseToken {
            issuer: issuer(&a.issuer, meta, key_id)?,
            scope: a.scope.clone(),
            lifetime: lifetime(600),
        }),
        Apns(a) | Devicecheck(a) => Box::new(ProviderToken {
            service: if matches!(command, Apns(_)) {
                ProviderService::Apns
            } else {
                ProviderService::DeviceCheck
            },
            team_id: team_id(a, key_id, meta)?,
            skew: common.skew,
        }),
        SignInWithApple(a) => Box::new(SignInWithAppleToken {
            team_id: team_id(&a.team, key_id, meta)?,
            client_id: a.client_id.clone(),
            lifetime: lifetime(3600),
        }),
        Musickit(a) => Box::new(MusicKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            origins: a.origin.clone(),
            lifetime: lifetime(86400),
        }),
        Weatherkit(a) => Box::new(WeatherKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            service_id: a.service_id.clone(),
            lifetime: lifetime(3600),
        }),
        Mapkit(a) => Box::new(MapKitToken {
            team_id: team_id(&a.team, key_id, meta)?,
            origin: a.origin.clone(),
            mapkit_js: a.mapkit_js,
            lifetime: lifetime(3600),
        }),
    })
}

/// The issuer given or recorded with the key.
fn issuer(
    given: &Option<IssuerId>,
    meta: Option<&KeyMetadata>,
    key_id: &KeyId,
) -> Result<IssuerId, Error> {
    let resolved = match meta {
        Some(meta) => meta.issuer(key_id, given.clone())?,
        None => given.clone(),
    };
    resolved.ok_or(Error::MissingInput {
        what: "--issuer",
        why:
            "give it, set P8HSM_ISSUER, or record it with `p8hsm import --kind KIND --issuer UUID`",
    })
}

/// The Team ID given or recorded with the key.
fn team_id(args: &TeamArgs, key_id: &KeyId, meta: Option<&KeyMetadata>) -> Result<TeamId, Error> {
    let resolved = match meta {
        Some(meta) => meta.team_id(key_id, args.team_id.clone())?,
        None => args.team_id.clone(),
    };
    resolved.ok_or(Error::MissingInput {
        what: "--team-id",
        why: "give it, set P8HSM_TEAM_ID, or record it with `p8hsm import --kind developer --team-id ID`",
    })
}
