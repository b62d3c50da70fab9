//! PKCS#11: loading a module, selecting a token by label, logging in once, and the
//! key operations p8hsm needs. Knows nothing about Apple's token kinds.
//!
//! - [`context`](self): one initialized context per module per process;
//! - [`TokenLocation`], [`TokenSelector`]: which token, found by label and URI attributes;
//! - [`Token`]: a logged-in token with a pool of sessions that recovers from lost
//!   sessions and devices (the pool, the kept PIN and recovery are one file);
//! - [`HsmKey`]: a key on the token, signing through it;
//! - keys generated in the token and given their key ID later ([`Generated`]);
//! - import, vendor [`Profile`]s, module discovery and RFC 7512 [`uri`]s.

#[forbid(unsafe_code)]
mod claim;
mod context;
#[forbid(unsafe_code)]
mod ec;
#[forbid(unsafe_code)]
mod generate;
#[forbid(unsafe_code)]
mod import;
#[forbid(unsafe_code)]
mod init;
#[forbid(unsafe_code)]
mod keys;
#[forbid(unsafe_code)]
pub mod modules;
#[forbid(unsafe_code)]
mod profile;
#[forbid(unsafe_code)]
mod session;
#[forbid(unsafe_code)]
mod several;
#[forbid(unsafe_code)]
mod slot;
#[forbid(unsafe_code)]
mod token;
#[forbid(unsafe_code)]
pub mod uri;

pub use crate::error::{CallFailed, Cause, Copies, LeftCopy};
pub use claim::Unfinished;
pub use context::ModuleArgs;
pub use generate::Generated;
pub use import::{ImportMethod, ImportOptions, Imported, PreparedImport};
pub use init::init_token;
pub use keys::{HsmKey, KeyInfo, KeyOrigin};
pub use modules::locate_module;
pub use profile::Profile;
pub use several::import_into_all;
pub use slot::{TokenLocation, TokenSelector};
pub use token::{FoundToken, Token};
