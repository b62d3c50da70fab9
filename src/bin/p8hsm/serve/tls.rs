//! TLS for the service: rustls (TLS 1.2 and 1.3, ring), every client presenting a
//! certificate its CA issued (mutual TLS, required), and the server's own key either a
//! PEM file or a P-256 key on the token — so that the service's identity lives in the
//! token too — and the names a client certificate gives its holder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use der::{Decode, Encode};
use p256::pkcs8::EncodePublicKey;
use p8hsm::pkcs11::uri::Pkcs11Uri;
use p8hsm::{Es256Signer, HsmKey, KeyId, Token};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureAlgorithm, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use crate::failure::Failure;

fn setup(what: String) -> Failure {
    Failure::ServeSetup(what)
}

/// The server's TLS key: a PEM file, or a P-256 key on the token the service signs
/// with, named by a PKCS#11 URI whose id or object is its key ID.
#[derive(Debug, Clone)]
pub enum TlsKey {
    /// A PEM file.
    File(PathBuf),
    /// A key on the token.
    Token {
        /// Its key ID.
        key_id: KeyId,
        /// The token the URI names, if it names one: it must be the service's.
        token: Option<String>,
    },
}

impl std::str::FromStr for TlsKey {
    type Err = p8hsm::Error;

    fn from_str(text: &str) -> Result<TlsKey, p8hsm::Error> {
        // A URI as the URI parser reads one: white space aside, the scheme in any case. A
        // URI taken for a file name would be echoed in an error, pin-value and all.
        let scheme: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .take(7)
            .collect();
        if !scheme.eq_ignore_ascii_case("pkcs11:") {
            return Ok(TlsKey::File(PathBuf::from(text)));
        }
        let uri: Pkcs11Uri = text.parse()?;
        if uri.pin_value.is_some()
            || uri.pin_source.is_some()
            || uri.module_path.is_some()
            || uri.module_name.is_some()
        {
            return Err(p8hsm::Error::InvalidUri {
                reason: "--tls-key names a key on the token the service signs with, which the \
                         other options choose and log in to: leave out pin-value, pin-source, \
                         module-path and module-name"
                    .to_owned(),
            });
        }
        let key_id = uri.key_id().ok_or_else(|| p8hsm::Error::InvalidUri {
            reason: "--tls-key's URI needs an id= or object= that is the key's ID".to_owned(),
        })?;
        Ok(TlsKey::Token {
            key_id,
            token: uri.token,
        })
    }
}

/// The files (and token key) the service's TLS is made of; read at start and again on
/// SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: TlsKey,
    /// The CA certificates that issue the clients' certificates (PEM).
    pub client_ca: PathBuf,
    /// Certificate revocation lists of the client CA (PEM), if any.
    pub crl: Option<PathBuf>,
}

/// The server's TLS configuration, and the verifier of client certificates in it.
pub struct Tls {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// The server's TLS configuration. Sessions are never resumed: a resumed session skips
/// the client certificate's checks (its expiry, a CRL read since), so every connection
/// presents and has its certificate checked anew.
pub fn server_config(files: &TlsFiles, token: &Token) -> Result<Tls, Failure> {
    let (cert, client_ca) = (&files.cert, &files.client_ca);
    let chain = certificates(cert, "the certificate chain")?;
    if chain.is_empty() {
        return Err(setup(format!("{} holds no certificate", cert.display())));
    }
    let signing_key: Arc<dyn SigningKey> = match &files.key {
        TlsKey::Token {
            key_id,
            token: named,
        } => Arc::new(token_key(key_id, named.as_deref(), token, &chain[0])?),
        TlsKey::File(path) => {
            let pem = read(path)?;
            let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                setup(format!(
                    "cannot read the private key {}: {e}",
                    path.display()
                ))
            })?;
            ring::sign::any_supported_type(&der).map_err(|e| {
                setup(format!(
                    "cannot use the private key {}: {e}",
                    path.display()
                ))
            })?
        }
    };
    let certified = CertifiedKey::new(chain, signing_key);
    if matches!(files.key, TlsKey::File(_)) {
        certified
            .keys_match()
            .map_err(|e| setup(format!("--tls-key does not match --tls-cert: {e}")))?;
    }

    let mut roots = RootCertStore::empty();
    for ca in certificates(client_ca, "the client CA")? {
        roots
            .add(ca)
            .map_err(|e| setup(format!("cannot use a client CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(setup(format!(
            "{} holds no certificate",
            client_ca.display()
        )));
    }
    let provider = Arc::new(ring::default_provider());
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(path) = &files.crl {
        let pem = read(path)?;
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup(format!("cannot read the CRL {}: {e}", path.display())))?;
        if crls.is_empty() {
            return Err(setup(format!("{} holds no CRL", path.display())));
        }
        // The client certificate's own status must be known: one no CRL covers is refused.
        // And every one once the CRL is past its next update: the job that fetches it has
        // stopped, and revocations would go unseen.
        verifier = verifier
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration();
    }
    let verifier: Arc<dyn ClientCertVerifier> =
        Arc::new(SigningCertificates(verifier.build().map_err(|e| {
            setup(format!("cannot verify clients with that CA: {e}"))
        })?));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| setup(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Tls {
        config: Arc::new(config),
        verifier,
    })
}

/// Client certificates as WebPKI verifies them, and only those that may sign: a
/// certificate whose keyUsage leaves out digitalSignature is refused.
#[derive(Debug)]
struct SigningCertificates(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for SigningCertificates {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let cert = Certificate::from_der(end_entity.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        match cert.tbs_certificate.get::<KeyUsage>() {
            Ok(None) => Ok(verified),
            Ok(Some((_, usage))) if usage.digital_signature() => Ok(verified),
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The largest PEM file read.
const MAX_PEM: usize = 1024 * 1024;

/// A PEM file's bytes: a regular file only (a FIFO must not hang the start), bounded,
/// in a buffer wiped on drop.
fn read(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    let bytes = crate::input::read(path, MAX_PEM).map_err(|failure| setup(failure.message()))?;
    if bytes.len() > MAX_PEM {
        return Err(setup(format!("{} is over 1 MiB", path.display())));
    }
    Ok(bytes)
}

/// The certificates of a PEM file.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let pem = read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(format!("cannot read {what} {}: {e}", path.display())))
}

/// The TLS key `key_id` on the token (which `named`, if given, must name), checked
/// against the certificate.
fn token_key(
    key_id: &KeyId,
    named: Option<&str>,
    token: &Token,
    cert: &CertificateDer<'_>,
) -> Result<TokenKey, Failure> {
    if let Some(label) = named {
        if label != token.label() {
            return Err(setup(format!(
                "--tls-key names token \"{label}\", but the service signs with token \"{}\": \
                 the TLS key must be on the same token",
                token.label()
            )));
        }
    }
    let unusable = |e: p8hsm::Error| setup(format!("--tls-key: {e}"));
    let public = token.public_key(key_id).map_err(unusable)?;
    let spki = public
        .to_public_key_der()
        .map_err(|e| setup(e.to_string()))?;
    let certificate = Certificate::from_der(cert.as_ref())
        .map_err(|e| setup(format!("cannot read the server certificate: {e}")))?;
    let cert_spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| setup(e.to_string()))?;
    if cert_spki != spki.as_bytes() {
        return Err(setup(format!(
            "the certificate in --tls-cert is not for key {key_id}'s public key"
        )));
    }
    Ok(TokenKey(Arc::new(token.key(key_id).map_err(unusable)?)))
}

/// A TLS signing key that signs inside the token (ECDSA P-256 with SHA-256).
#[derive(Debug)]
struct TokenKey(Arc<HsmKey>);

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TokenSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TokenSigner(Arc<HsmKey>);

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // TLS wants ECDSA signatures DER-encoded.
        self.0
            .sign_es256(message)
            .map(|signature| signature.to_der().as_bytes().to_vec())
            .map_err(|e| rustls::Error::General(format!("the token did not sign: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// The X.520 commonName attribute.
const COMMON_NAME: der::oid::ObjectIdentifier = der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");

/// The names a (verified) client certificate gives its holder, by kind.
#[derive(Debug, Clone, Default)]
pub struct CertNames {
    /// The subject's common names.
    pub cn: Vec<String>,
    /// The DNS subject alternative names.
    pub dns: Vec<String>,
    /// The URI subject alternative names.
    pub uri: Vec<String>,
    /// Whether it has a subjectAltName extension that could not be read: it may name a
    /// DNS name or URI, so its CN names no one.
    pub unreadable_sans: bool,
}

/// How many of a certificate's names [`CertNames::shown`] gives, and how many characters
/// of each: a certificate may carry hundreds of long names, and each refusal is logged.
const SHOWN_NAMES: usize = 8;
const SHOWN_CHARS: usize = 128;

impl CertNames {
    /// Reads them from a certificate.
    pub fn of(cert: &CertificateDer<'_>) -> CertNames {
        let mut names = CertNames::default();
        let Ok(cert) = Certificate::from_der(cert.as_ref()) else {
            return names;
        };
        let tbs = &cert.tbs_certificate;
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == COMMON_NAME {
                    if let Ok(text) = atv.value.decode_as::<der::asn1::Utf8StringRef<'_>>() {
                        names.cn.push(text.as_str().to_owned());
                    } else if let Ok(text) =
                        atv.value.decode_as::<der::asn1::PrintableStringRef<'_>>()
                    {
                        names.cn.push(text.as_str().to_owned());
                    }
                }
            }
        }
        match tbs.get::<SubjectAltName>() {
            Ok(Some((_, san))) => {
                for name in san.0 {
                    match name {
                        GeneralName::DnsName(dns) => names.dns.push(dns.as_str().to_owned()),
                        GeneralName::UniformResourceIdentifier(uri) => {
                            names.uri.push(uri.as_str().to_owned())
                        }
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(_) => names.unreadable_sans = true,
        }
        names
    }

    /// Whether it has DNS or URI names, or may have (then its CN names no one, unless a
    /// caller asks).
    pub fn has_sans(&self) -> bool {
        !self.dns.is_empty() || !self.uri.is_empty() || self.unreadable_sans
    }

    /// Its subject's common name: `None` when it has none, or several (which of them
    /// would the certificate's holder be?).
    pub fn cn(&self) -> Option<&str> {
        match self.cn.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Its names as a policy writes them (`cn:…`, `dns:…`, `uri:…`), bounded for logs and
    /// replies: at most 8, each cut to 128 characters (ending in `...`), and `+N more`.
    pub fn shown(&self) -> Vec<String> {
        let all = (self.cn.iter().map(|n| ("cn", n)))
            .chain(self.dns.iter().map(|n| ("dns", n)))
            .chain(self.uri.iter().map(|n| ("uri", n)));
        let total = self.cn.len() + self.dns.len() + self.uri.len();
        let mut shown: Vec<String> = all
            .take(SHOWN_NAMES)
            .map(|(kind, name)| format!("{kind}:{}", crate::audit::bounded(name, SHOWN_CHARS)))
            .collect();
        if total > SHOWN_NAMES {
            shown.push(format!("+{} more", total - SHOWN_NAMES));
        }
        shown
    }
}

/// TLS handshakes, and the threads that drive them when the token signs them.
#[derive(Clone)]
pub struct Handshakes {
    current: Arc<std::sync::RwLock<Current>>,
    threads: Option<Handle>,
}

/// The TLS configuration in force, and how many times it was read again.
struct Current {
    acceptor: TlsAcceptor,
    verifier: Arc<dyn ClientCertVerifier>,
    generation: u64,
}

/// A connection's client certificate, kept to check it again: a keep-alive connection
/// must not outlive its certificate's expiry, nor a CRL or client CA read since.
#[derive(Debug)]
pub struct Client {
    chain: Vec<CertificateDer<'static>>,
    not_after: u64,
    /// The generation of the TLS configuration it was last verified under.
    verified: AtomicU64,
}

impl Client {
    /// The client of a connection whose handshake is done.
    pub fn of(stream: &TlsStream<TcpStream>, generation: u64) -> Client {
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let not_after = chain
            .first()
            .and_then(|cert| Certificate::from_der(cert.as_ref()).ok())
            .map_or(0, |cert| {
                cert.tbs_certificate
                    .validity
                    .not_after
                    .to_unix_duration()
                    .as_secs()
            });
        Client {
            chain,
            not_after,
            verified: AtomicU64::new(generation),
        }
    }

    /// Its certificate's names.
    pub fn names(&self) -> CertNames {
        self.chain.first().map(CertNames::of).unwrap_or_default()
    }
}

impl Handshakes {
    /// Handshakes with `tls`, driven by `threads` (a runtime of their own) if given.
    pub fn new(tls: Tls, threads: Option<Handle>) -> Handshakes {
        Handshakes {
            current: Arc::new(std::sync::RwLock::new(Current {
                acceptor: TlsAcceptor::from(tls.config),
                verifier: tls.verifier,
                generation: 0,
            })),
            threads,
        }
    }

    /// Handshakes from now on with `tls`; those under way finish with the old one, and
    /// the certificates of connections already open are checked again at their next
    /// request ([`Handshakes::check`]).
    pub fn replace(&self, tls: Tls) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.acceptor = TlsAcceptor::from(tls.config);
        current.verifier = tls.verifier;
        current.generation += 1;
    }

    /// Refuses a request on a connection whose client certificate has expired since its
    /// handshake, or that the TLS configuration read since (a CRL, a client CA) refuses.
    pub fn check(&self, client: &Client) -> Result<(), &'static str> {
        let now = UnixTime::now();
        if now.as_secs() > client.not_after {
            return Err("the client certificate has expired");
        }
        let (verifier, generation) = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            (current.verifier.clone(), current.generation)
        };
        if client.verified.load(Ordering::Relaxed) == generation {
            return Ok(());
        }
        let Some((leaf, intermediates)) = client.chain.split_first() else {
            return Err("the connection has no client certificate");
        };
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|_| "the client certificate is no longer accepted (revoked, or of a CA no longer trusted)")?;
        client.verified.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// The TLS connection over `tcp` once its handshake is done, or `None` (no
    /// certificate, a foreign or expired one). The caller bounds how long it may take: a
    /// handshake given up on is dropped, on the handshake threads too (one waiting on
    /// the token there ends when the token answers).
    pub async fn accept(&self, tcp: TcpStream) -> Option<(TlsStream<TcpStream>, Client)> {
        let (acceptor, generation) = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            (current.acceptor.clone(), current.generation)
        };
        let stream = self.handshake(acceptor, tcp).await?;
        let client = Client::of(&stream, generation);
        Some((stream, client))
    }

    async fn handshake(
        &self,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
    ) -> Option<TlsStream<TcpStream>> {
        match &self.threads {
            Some(threads) => {
                // The connection waits here until a thread takes it: a handshake given up
                // on while every thread waits on the token is closed at once, not when a
                // thread is free to drop it.
                let waiting = Arc::new(Mutex::new(Some(tcp)));
                let taken = waiting.clone();
                let handle = threads.spawn(async move {
                    let tcp = taken.lock().unwrap_or_else(|p| p.into_inner()).take()?;
                    acceptor.accept(tcp).await.ok()
                });
                let abort = handle.abort_handle();
                let _given_up = scopeguard(move || {
                    abort.abort();
                    drop(waiting.lock().unwrap_or_else(|p| p.into_inner()).take());
                });
                handle.await.ok()?
            }
            None => acceptor.accept(tcp).await.ok(),
        }
    }
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The connections in their TLS handshake: at most a budget of them, the oldest giving
/// way to a new one when it is full.
pub struct Handshaking {
    budget: usize,
    open: Mutex<(u64, BTreeMap<u64, oneshot::Sender<()>>)>,
}

/// A handshake's place; given back when dropped.
pub struct Slot {
    of: Arc<Handshaking>,
    number: u64,
}

impl Handshaking {
    /// At most `budget` handshakes at once.
    pub fn new(budget: usize) -> Handshaking {
        Handshaking {
            budget: budget.max(1),
            open: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// A place for a new handshake, taken from the oldest when all are taken; the
    /// receiver completes (with an error) when this one must give way in turn.
    pub fn enter(self: &Arc<Self>) -> (Slot, oneshot::Receiver<()>) {
        let (sender, evicted) = oneshot::channel();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while open.1.len() >= self.budget {
            // Dropping its sender tells the oldest handshake to give up.
            open.1.pop_first();
        }
        open.0 += 1;
        let number = open.0;
        open.1.insert(number, sender);
        let slot = Slot {
            of: self.clone(),
            number,
        };
        (slot, evicted)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|p| p.into_inner());
        open.1.remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_key_uri_is_never_taken_for_a_file_and_names_only_the_key() {
        let secret = "0000secret9999";
        for text in [
            format!("PKCS11:object=TLSSERVER1?pin-value={secret}"),
            format!(" pkcs11:object=TLSSERVER1?pin-value={secret}"),
            format!("pkcs11 :object=TLSSERVER1?pin-value={secret}"),
            format!("pkcs11:object=TLSSERVER1?pin-source=file:/x{secret}"),
            format!("pkcs11:object=TLSSERVER1?module-path=/{secret}.so"),
        ] {
            let refused = text.parse::<TlsKey>().unwrap_err().to_string();
            assert!(!refused.contains(secret), "{refused}");
            assert!(refused.contains("leave out pin-value"), "{refused}");
        }
        assert!(matches!(
            "PKCS11:object=TLSSERVER1;token=p8hsm".parse::<TlsKey>(),
            Ok(TlsKey::Token { token: Some(_), .. })
        ));
        assert!(matches!(
            "server.key".parse::<TlsKey>(),
            Ok(TlsKey::File(_))
        ));
    }
}
