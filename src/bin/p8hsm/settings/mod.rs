//! The global options resolved once, with the one documented precedence: options and
//! their environment variables win over the `--key` URI, which wins over the defaults.
//! Everything that opens a token (the one-shot commands, the agent) goes through here.

mod pin;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use zeroize::Zeroizing;

use p8hsm::pkcs11::uri::Pkcs11Uri;
use p8hsm::pkcs11::FoundToken;
use p8hsm::pkcs11::{self, ModuleArgs, Profile, TokenLocation, TokenSelector};
use p8hsm::{Error, KeyId, Token};
use secrecy::SecretString;

use crate::failure::Failure;
pub use pin::PinSource;

/// The options every command shares: where the token is, and how to log in.
#[derive(Debug, Args)]
pub struct Global {
    /// PKCS#11 module [default: $PKCS11_MODULE_PATH, then the --key URI's module-path or
    /// module-name, then p11-kit's proxy when modules are registered with p11-kit, then
    /// SoftHSM's install paths]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "P8HSM_MODULE",
        value_name = "PATH"
    )]
    pub module: Option<PathBuf>,

    /// What the module is given at C_Initialize (pReserved), e.g. NSS softoken's
    /// "configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=";
    /// prefer the environment variable if it holds a secret [default: the module's
    /// x-init-reserved in its p11-kit registration]
    // Kept as text that is never shown: it may hold a secret.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "P8HSM_MODULE_ARGS",
        value_name = "STRING",
        hide_env_values = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretText::from(s))
    )]
    pub module_args: Option<SecretText>,

    /// Label of the token to use (tokens are chosen by label, never by slot number)
    /// [default: the URI's token, then p8hsm]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "P8HSM_TOKEN",
        value_name = "LABEL"
    )]
    pub token: Option<String>,

    /// A PKCS#11 URI (RFC 7512) naming the token and key, e.g.
    /// "pkcs11:token=p8hsm;object=2X9R4HXF34?module-path=…"; options and their environment
    /// variables win over what it says
    // Kept as text until parsed, so that clap never echoes a pin-value in an error.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "P8HSM_KEY",
        value_name = "URI",
        hide_env_values = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretText::from(s))
    )]
    pub key: Option<SecretText>,

    /// Where the user PIN comes from: file:PATH, env:VAR or prompt [default: the URI's
    /// pin-source, then its pin-value, then prompt]
    // Kept as text until parsed: clap's errors would echo a PIN typed here by mistake.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "P8HSM_PIN_SOURCE",
        value_name = "SOURCE",
        hide_env_values = true,
        value_parser = |s: &str| Ok::<_, std::convert::Infallible>(SecretText::from(s))
    )]
    pub pin_source: Option<SecretText>,

    /// Vendor profile: standard, yubihsm, cloudhsm, kmsp11, nss, tpm2 or gnome-keyring [default: detected from the
    /// module and the token]
    #[arg(long, global = true, help_heading = "Global options", env = "P8HSM_PROFILE", value_name = "PROFILE", value_parser = parse::<Profile>)]
    pub profile: Option<Profile>,
}

/// Text that may hold a secret (a URI's pin-value, a PIN typed in the wrong place):
/// wiped on drop, never shown by `Debug`.
#[derive(Clone)]
pub struct SecretText(Zeroizing<String>);

impl From<&str> for SecretText {
    fn from(s: &str) -> Self {
        SecretText(Zeroizing::new(s.to_owned()))
    }
}

impl SecretText {
    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([REDACTED])")
    }
}

fn parse<T: std::str::FromStr<Err = p8hsm::Error>>(s: &str) -> Result<T, p8hsm::Error> {
    s.parse()
}

/// The label of the token p8hsm opens when nothing names one.
const DEFAULT_TOKEN: &str = "p8hsm";

/// A URI's pin-source, else its pin-value (with a warning on stderr).
fn uri_pin_source(uri: &Pkcs11Uri) -> Option<Result<PinSource, Failure>> {
    if let Some(source) = &uri.pin_source {
        return Some(source.parse());
    }
    let pin = uri.pin_value.as_ref()?;
    eprintln!(
        "warning: the PKCS#11 URI carries pin-value: keep it as secret as the PIN, or use \
         pin-source"
    );
    Some(Ok(PinSource::Value(pin.clone())))
}

/// What the global options and the `--key` URI say about where to work.
#[derive(Debug)]
pub struct Config {
    global: Global,
    uri: Option<Pkcs11Uri>,
}

impl Config {
    /// Parses the `--key` URI (the only global option clap leaves as text).
    pub fn resolve(global: Global) -> Result<Config, Failure> {
        let uri = match &global.key {
            Some(text) => Some(text.expose().parse::<Pkcs11Uri>()?),
            None => None,
        };
        Ok(Config { global, uri })
    }

    /// The `--key` URI, if one was given.
    pub fn uri(&self) -> Option<&Pkcs11Uri> {
        self.uri.as_ref()
    }

    /// `--module` or `P8HSM_MODULE`.
    pub fn explicit_module(&self) -> Option<&Path> {
        self.global.module.as_deref()
    }

    /// The module to load.
    pub fn module(&self) -> Result<PathBuf, Error> {
        pkcs11::locate_module(self.explicit_module(), self.uri())
    }

    /// What the module is given at C_Initialize: `--module-args` (or
    /// `P8HSM_MODULE_ARGS`), else its p11-kit registration's `x-init-reserved`.
    pub fn module_args(&self, module: &Path) -> Result<Option<ModuleArgs>, Error> {
        match &self.global.module_args {
            Some(text) => ModuleArgs::new(text.expose()).map(Some),
            None => Ok(pkcs11::modules::registered_args(module)),
        }
    }

    /// The module, token and profile to open.
    pub fn spec(&self) -> Result<TokenLocation, Error> {
        let uri = self.uri();
        let module = self.module()?;
        Ok(TokenLocation {
            module_args: self.module_args(&module)?,
            module,
            selector: TokenSelector {
                label: self
                    .global
                    .token
                    .clone()
                    .or_else(|| uri.and_then(|u| u.token.clone()))
                    .or_else(|| Some(DEFAULT_TOKEN.to_owned())),
                manufacturer: uri.and_then(|u| u.manufacturer.clone()),
                model: uri.and_then(|u| u.model.clone()),
                serial: uri.and_then(|u| u.serial.clone()),
                slot_id: uri.and_then(|u| u.slot_id),
            },
            profile: self.global.profile,
        })
    }

    /// Where the PIN comes from: `--pin-source` (or `P8HSM_PIN_SOURCE`), then the URI's
    /// pin-source, then its pin-value (with a warning on stderr), then a prompt.
    pub fn pin_source(&self) -> Result<PinSource, Failure> {
        if let Some(source) = &self.global.pin_source {
            return source.expose().parse();
        }
        self.uri()
            .and_then(uri_pin_source)
            .unwrap_or(Ok(PinSource::Prompt))
    }

    /// Another token a PKCS#11 URI names (`import --also-into`), and where its PIN comes
    /// from: the URI's module (else this configuration's), the URI's token attributes
    /// (one of token, serial or slot-id is required), and the URI's pin-source or
    /// pin-value, else `--pin-source`, else a prompt.
    pub fn other(&self, text: &SecretText) -> Result<(TokenLocation, PinSource), Failure> {
        let uri = text.expose().parse::<Pkcs11Uri>()?;
        if uri.token.is_none() && uri.serial.is_none() && uri.slot_id.is_none() {
            return Err(Failure::Usage(
                "--also-into needs a URI that names a token: add token=LABEL (or serial= or \
                 slot-id=); `p8hsm modules` prints each token's URI"
                    .to_owned(),
            ));
        }
        let module = if uri.module_path.is_some() || uri.module_name.is_some() {
            pkcs11::locate_module(None, Some(&uri))?
        } else {
            self.module()?
        };
        let pin = match uri_pin_source(&uri) {
            Some(source) => source?,
            None => match &self.global.pin_source {
                Some(source) => source.expose().parse()?,
                None => PinSource::Prompt,
            },
        };
        // --module-args belongs to the module the other options choose.
        let module_args = if module == self.module()? {
            self.module_args(&module)?
        } else {
            pkcs11::modules::registered_args(&module)
        };
        let spec = TokenLocation {
            module,
            module_args,
            selector: TokenSelector {
                label: uri.token.clone(),
                manufacturer: uri.manufacturer.clone(),
                model: uri.model.clone(),
                serial: uri.serial.clone(),
                slot_id: uri.slot_id,
            },
            profile: None,
        };
        Ok((spec, pin))
    }

    /// Finds the token and reads its PIN (a prompt names the token), without logging in.
    pub fn find(&self) -> Result<(FoundToken, SecretString), Failure> {
        let source = self.pin_source()?;
        let found = Token::find(&self.spec()?)?;
        let pin = source.read(found.label())?;
        Ok((found, pin))
    }

    /// Opens the token: finds it, reads the PIN, logs in once.
    pub fn open(&self) -> Result<Token, Failure> {
        let (found, pin) = self.find()?;
        Ok(found.login(pin)?)
    }

    /// The Apple key ID: the one given, else the URI's id or object when it is one.
    pub fn key_id(&self, given: Option<&KeyId>) -> Result<KeyId, Error> {
        if let Some(key_id) = given {
            return Ok(key_id.clone());
        }
        self.uri_key_id().ok_or(Error::MissingInput {
            field: "key_id",
            what: "key ID",
            why: "it names the key",
        })
    }

    /// The URI's id, else its object, when it is an Apple key ID.
    pub fn uri_key_id(&self) -> Option<KeyId> {
        self.uri()?.key_id()
    }
}
