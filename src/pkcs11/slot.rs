//! Which token to use: chosen by label (never by slot number) and, from a PKCS#11 URI,
//! by manufacturer, model, serial number and slot ID.

use std::fmt;
use std::path::PathBuf;

use cryptoki::slot::{Slot, TokenInfo};
use serde::{Deserialize, Serialize};

use super::context::{
    ck, reinitialize, rv_name, settle, transient, Module, ModuleArgs, SETTLE_ATTEMPTS,
};
use super::profile::Profile;
use crate::Error;

/// A CK_TOKEN_INFO text field without its padding: blanks as PKCS#11 says, or NULs as
/// some tokens (tpm2-pkcs11 on swtpm) pad it.
pub(super) fn unpadded(field: &str) -> &str {
    field.trim_end_matches([' ', '\0'])
}

/// What to open: the module, the token in it, and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLocation {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// What the module is given at C_Initialize (`--module-args`, `P8HSM_MODULE_ARGS`,
    /// p11-kit's `x-init-reserved`), if anything.
    #[serde(default)]
    pub module_args: Option<ModuleArgs>,
    /// The token.
    pub selector: TokenSelector,
    /// The vendor profile; detected from the module and the token when `None`.
    pub profile: Option<Profile>,
}

/// Which token to use: its label and, from a PKCS#11 URI, any of its manufacturer,
/// model, serial number and slot ID. Every field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSelector {
    /// CKA label of the token.
    pub label: Option<String>,
    /// Manufacturer ID.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// Slot ID.
    pub slot_id: Option<u64>,
}

impl TokenLocation {
    /// The token `selector` matches in `module`: the module initialized without
    /// arguments and the profile detected (set [`TokenLocation::module_args`] and
    /// [`TokenLocation::profile`] to say otherwise).
    pub fn new(module: impl Into<PathBuf>, selector: TokenSelector) -> TokenLocation {
        TokenLocation {
            module: module.into(),
            module_args: None,
            selector,
            profile: None,
        }
    }
}

impl TokenSelector {
    /// The token labelled `label`.
    pub fn label(label: &str) -> Self {
        TokenSelector {
            label: Some(label.to_owned()),
            ..TokenSelector::default()
        }
    }

    fn matches(&self, slot: Slot, info: &TokenInfo) -> bool {
        let same = |wanted: &Option<String>, actual: &str| {
            wanted.as_deref().is_none_or(|w| w == unpadded(actual))
        };
        same(&self.label, info.label())
            && same(&self.manufacturer, info.manufacturer_id())
            && same(&self.model, info.model())
            && same(&self.serial, info.serial_number())
            && self.slot_id.is_none_or(|id| id == slot.id())
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.label {
            parts.push(format!("labelled \"{v}\""));
        }
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                parts.push(format!("with {name} \"{v}\""));
            }
        }
        if let Some(id) = self.slot_id {
            parts.push(format!("in slot {id}"));
        }
        if parts.is_empty() {
            parts.push("at all".to_owned());
        }
        f.write_str(&parts.join(", "))
    }
}

/// [`find_slot`], trying again — after reading the store anew — while another process
/// may be rewriting a software token's store.
pub(super) fn find_slot_settled(
    pkcs11: &Module,
    selector: &TokenSelector,
) -> Result<(Slot, TokenInfo), Error> {
    let mut attempt = 0;
    loop {
        match find_slot(pkcs11, selector) {
            Err(e) if transient(&e) && attempt < SETTLE_ATTEMPTS => {
                attempt += 1;
                settle(attempt);
                reinitialize(pkcs11).map_err(ck("C_Initialize"))?;
            }
            found => return found,
        }
    }
}

/// The slots with an initialized token and each token's information. A slot whose
/// token information cannot be had is left out, and why is said (openCryptoki's soft
/// token reports a `utcTime` PKCS#11 does not allow, which cryptoki cannot read): the
/// other slots still work.
pub(super) fn initialized_tokens(pkcs11: &Module) -> Result<Readable, Error> {
    let mut readable = Readable::default();
    for slot in pkcs11.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
        match pkcs11.get_token_info(slot) {
            Ok(info) if info.token_initialized() => readable.tokens.push((slot, info)),
            Ok(_) => {}
            Err(e) => readable.skipped.push(format!(
                "slot {} skipped: C_GetTokenInfo {}",
                slot.id(),
                match e {
                    cryptoki::error::Error::Pkcs11(..) => format!("failed: {}", rv_name(&e)),
                    // The one field of CK_TOKEN_INFO that cryptoki parses.
                    other => format!(
                        "reported a utcTime that is not PKCS#11's YYYYMMDDhhmmss00 ({other})"
                    ),
                }
            )),
        }
    }
    Ok(readable)
}

/// What [`initialized_tokens`] found.
#[derive(Default)]
pub(super) struct Readable {
    pub tokens: Vec<(Slot, TokenInfo)>,
    /// Why each slot left out was.
    pub skipped: Vec<String>,
}

/// The one slot whose token `selector` matches, and the token's information.
pub(super) fn find_slot(
    pkcs11: &Module,
    selector: &TokenSelector,
) -> Result<(Slot, TokenInfo), Error> {
    let mut available = Vec::new();
    let mut matching = Vec::new();
    let readable = initialized_tokens(pkcs11)?;
    for (slot, info) in readable.tokens {
        available.push(unpadded(info.label()).to_owned());
        if selector.matches(slot, &info) {
            matching.push((slot, info));
        }
    }
    if matching.len() == 1 {
        return Ok(matching.remove(0));
    }
    match matching.as_slice() {
        [] => Err(Error::TokenNotFound {
            wanted: selector.to_string(),
            available,
            skipped: readable.skipped,
        }),
        many => Err(Error::TokenAmbiguous {
            wanted: selector.to_string(),
            count: many.len(),
        }),
    }
}
