//! Certificates made with openssl for the service's tests.

use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The arguments of `p8hsm serve` on a free local port.
pub fn serve_args(cert: &str, key: &str, ca: &str, policy: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--client-ca",
        ca,
        "--policy",
        policy,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Certificates made with openssl in a directory.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// An empty directory for certificates.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        succeeded(&out);
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// `p8hsm serve` on a free local port with `cert` and `key`, this directory's
    /// `ca.pem` for clients and its `policy.toml`.
    pub fn serve_args(&self, cert: &str, key: &str) -> Vec<String> {
        serve_args(cert, key, &self.path("ca.pem"), &self.path("policy.toml"))
    }

    /// `openssl req` with a new P-256 key `name.key` for subject `cn`, writing `out`.
    fn request(&self, extra: &[&str], name: &str, cn: &str, out: &str) {
        let (key, subject) = (format!("{name}.key"), format!("/CN={cn}"));
        let mut args = vec!["req"];
        args.extend(extra);
        args.extend([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ]);
        args.extend(["-keyout", &key, "-out", out, "-subj", &subject]);
        self.openssl(&args);
    }

    /// A self-signed CA `name` (name.key, name.pem).
    pub fn ca(&self, name: &str) {
        let pem = format!("{name}.pem");
        self.request(&["-x509", "-days", "2"], name, name, &pem);
    }

    /// A certificate `name.pem` issued by `ca` for subject `cn` with extensions `ext`,
    /// valid for `days` (negative: expired), for a new key `name.key` or for the public
    /// key in `public` (the key stays where it is).
    pub fn issue(
        &self,
        ca: &str,
        name: &str,
        cn: &str,
        ext: &str,
        days: &str,
        public: Option<&Path>,
    ) {
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.request(&[], name, cn, &format!("{name}.csr"));
        let mut args = vec![
            "x509".to_owned(),
            "-req".to_owned(),
            "-in".to_owned(),
            format!("{name}.csr"),
            "-CA".to_owned(),
            format!("{ca}.pem"),
            "-CAkey".to_owned(),
            format!("{ca}.key"),
            "-out".to_owned(),
            format!("{name}.pem"),
            "-days".to_owned(),
            days.to_owned(),
            "-extfile".to_owned(),
            format!("{name}.ext"),
        ];
        if let Some(public) = public {
            args.extend([
                "-force_pubkey".to_owned(),
                public.to_str().unwrap().to_owned(),
            ]);
        }
        self.openssl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

impl Pki {
    /// `openssl ca`'s configuration for the CA `ca` (its database beside it), made once:
    /// for certificates with an exact end, and for revocations and CRLs.
    fn ca_config(&self, ca: &str) -> String {
        let config = format!("{ca}-ca.cnf");
        if !self.dir.join(&config).exists() {
            std::fs::write(self.dir.join(format!("{ca}-index.txt")), "").unwrap();
            std::fs::write(self.dir.join(format!("{ca}-serial")), "1000\n").unwrap();
            std::fs::write(self.dir.join(format!("{ca}-crlnumber")), "1000\n").unwrap();
            std::fs::write(
                self.dir.join(&config),
                format!(
                    "[ca]\ndefault_ca = own\n[own]\ndatabase = {ca}-index.txt\n\
                     new_certs_dir = .\nserial = {ca}-serial\ncrlnumber = {ca}-crlnumber\n\
                     certificate = {ca}.pem\nprivate_key = {ca}.key\ndefault_md = sha256\n\
                     default_crl_days = 1\npolicy = anything\nunique_subject = no\n\
                     [anything]\ncommonName = supplied\n"
                ),
            )
            .unwrap();
        }
        config
    }

    /// A certificate `name.pem` issued by `ca` for subject `cn` with extensions `ext`,
    /// valid until `seconds` from now.
    pub fn issue_for_seconds(&self, ca: &str, name: &str, cn: &str, ext: &str, seconds: u64) {
        let config = self.ca_config(ca);
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        self.request(&[], name, cn, &format!("{name}.csr"));
        let end = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds);
        let end = end.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let date = Command::new("date")
            .args(["-u", "-d", &format!("@{end}"), "+%Y%m%d%H%M%SZ"])
            .output()
            .unwrap();
        let end = String::from_utf8(date.stdout).unwrap();
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &config,
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.pem"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            end.trim(),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// Revokes `name.pem` in `ca`'s database.
    pub fn revoke(&self, ca: &str, name: &str) {
        let config = self.ca_config(ca);
        self.openssl(&["ca", "-config", &config, "-revoke", &format!("{name}.pem")]);
    }

    /// `ca`'s CRL as of its database, written to `out`.
    pub fn crl(&self, ca: &str, out: &str) {
        let config = self.ca_config(ca);
        self.openssl(&["ca", "-config", &config, "-gencrl", "-out", out]);
    }

    /// `ca`'s CRL as of its database, already past its next update, written to `out`.
    pub fn stale_crl(&self, ca: &str, out: &str) {
        let config = self.ca_config(ca);
        self.openssl(&[
            "ca",
            "-config",
            &config,
            "-gencrl",
            "-out",
            out,
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200102000000Z",
        ]);
    }
}
