//! Which token to use: chosen by label (never by slot number) and, from a PKCS#11 URI,
//! by manufacturer, model, serial number and slot ID.

use std::fmt;
use std::path::PathBuf;

use cryptoki::context::Pkcs11;
use cryptoki::slot::{Slot, TokenInfo};
use serde::{Deserialize, Serialize};

use super::context::{ck, reinitialize, settle, transient, SETTLE_ATTEMPTS};
use super::profile::Profile;
use crate::Error;

/// What to open: the module, the token in it, and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// The PKCS#11 module.
    pub module: PathBuf,
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
            wanted.as_deref().is_none_or(|w| w == actual.trim_end())
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
    pkcs11: &Pkcs11,
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

/// The one slot whose token `selector` matches, and the token's information.
pub(super) fn find_slot(
    pkcs11: &Pkcs11,
    selector: &TokenSelector,
) -> Result<(Slot, TokenInfo), Error> {
    let mut available = Vec::new();
    let mut matching = Vec::new();
    for slot in pkcs11
        .get_slots_with_initialized_token()
        .map_err(ck("C_GetSlotList"))?
    {
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        available.push(info.label().trim_end().to_owned());
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
        }),
        many => Err(Error::TokenAmbiguous {
            wanted: selector.to_string(),
            count: many.len(),
        }),
    }
}
