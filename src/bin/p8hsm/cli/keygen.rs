//! `p8hsm keygen` and `p8hsm assign`: a key pair born in the token, its public key
//! printed for Apple, and — once Apple shows the key ID — that ID given to it.

use p256::pkcs8::{EncodePublicKey, LineEnding};
use p8hsm::apple::metadata::KeyMetadata;
use p8hsm::{fingerprint, Error};

use super::args::AssignArgs;
use super::import::describe;
use crate::failure::{print, Failure};
use crate::settings::Config;

pub fn keygen(label: &str, config: &Config) -> Result<(), Failure> {
    let token = config.open()?;
    let generated = token.generate(label)?;
    let pem = generated
        .public_key
        .to_public_key_pem(LineEnding::LF)
        .map_err(Error::internal)?;
    eprintln!(
        "generated a P-256 key pair labelled \"{}\" in token \"{}\" (fingerprint {}); give \
         Apple the public key below, then record the key ID it shows: p8hsm assign --label \
         '{}' --key-id ID --kind KIND",
        generated.label,
        token.label(),
        generated.fingerprint,
        generated.label
    );
    print(&pem)
}

pub fn assign(args: &AssignArgs, config: &Config) -> Result<(), Failure> {
    let metadata = args.identities.metadata(&args.key_id)?;
    let bytes = metadata.as_ref().map(KeyMetadata::to_bytes);
    let public = config
        .open()?
        .assign(&args.label, &args.key_id, bytes.as_deref())?;
    let mut out = format!(
        "key_id       {}\nlabel        {}\nfingerprint  {}\norigin       generated\n",
        args.key_id,
        args.label,
        fingerprint(&public)
    );
    if let Some(meta) = &metadata {
        out.push_str(&describe(meta));
    }
    print(&out)
}
