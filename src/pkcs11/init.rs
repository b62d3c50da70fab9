//! Making a token: `C_InitToken` on a slot whose token is not initialized, then
//! `C_InitPIN`, through PKCS#11 itself (no vendor tool needed). What `p8hsm softhsm
//! init` uses to make a test token.

use std::path::Path;

use cryptoki::session::UserType;
use secrecy::SecretString;

use super::context::{ck, context};
use crate::Error;

/// Initializes the token of the first slot whose token is not initialized: labels it
/// `label` with `so_pin`, logs in as the security officer and sets `user_pin`.
/// SoftHSM always offers one such slot.
pub fn init_token(
    module: &Path,
    label: &str,
    so_pin: &SecretString,
    user_pin: &SecretString,
) -> Result<(), Error> {
    // A module that needs initialization arguments is not one this makes tokens on.
    let pkcs11 = context(module, None)?;
    let mut free = None;
    for slot in pkcs11.get_slots_with_token().map_err(ck("C_GetSlotList"))? {
        let info = pkcs11.get_token_info(slot).map_err(ck("C_GetTokenInfo"))?;
        if !info.token_initialized() {
            free = Some(slot);
            break;
        }
    }
    let slot = free.ok_or(Error::TokenInit {
        reason: "the module offers no slot with an uninitialized token".to_owned(),
    })?;
    pkcs11
        .init_token(slot, so_pin, label)
        .map_err(ck("initializing the token (C_InitToken)"))?;
    let session = pkcs11.open_rw_session(slot).map_err(ck("C_OpenSession"))?;
    session
        .login(UserType::So, Some(so_pin))
        .map_err(ck("logging in as the security officer (C_Login)"))?;
    session
        .init_pin(user_pin)
        .map_err(ck("setting the user PIN (C_InitPIN)"))?;
    session.logout().map_err(ck("C_Logout"))
}
