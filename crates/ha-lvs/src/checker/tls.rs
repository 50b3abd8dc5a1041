//! TLS for HTTPS checks (ldirectord `service = https`, keepalived `SSL_GET`).
//!
//! A health check dials the real server by IP address, while its certificate usually names the
//! virtual host, and real servers often carry self-signed or internal certificates. So by
//! default the certificate is NOT verified (what ldirectord and keepalived do): the check asks
//! "does the server complete a TLS handshake and answer the request?". The handshake
//! signature is still checked against the presented key, and SNI carries the virtual host name
//! so name-based virtual hosts answer as they would for clients. Verification against a CA
//! file is opt-in ([`TlsCheck::ca_file`]).
//!
//! Servers that require mutual TLS get a client certificate ([`TlsCheck::client_cert`], the
//! certificate and key of keepalived's global `SSL { certificate key }` block). Like the CA
//! file, its PEM files are read at every probe: a renewed certificate takes effect without a
//! restart, and a missing, unreadable or mismatched file is a down probe naming the file.
//!
//! Only the `ring` crypto provider is used (no process-wide default provider is installed or
//! required), and session resumption is off so that every probe does a full handshake: a
//! server whose certificate or key broke is noticed at the next probe, not when a ticket
//! expires.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// TLS settings of an HTTPS check ([`super::CheckKind::Http`] with `tls: Some(..)`).
///
/// `TlsCheck::default()` is the ldirectord/keepalived behaviour: no certificate verification,
/// SNI = the check's Host name when it is a DNS name, no client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsCheck {
    /// Name sent as SNI and, with [`TlsCheck::ca_file`], the name the certificate must carry.
    /// Default: the check's Host header without its port. An IP address (or no name at all)
    /// sends no SNI and, when verifying, requires the certificate to name that address
    /// (the endpoint's address when there is no name).
    pub server_name: Option<String>,
    /// Verify the server's certificate chain against the CA certificates in this PEM file
    /// (read at every probe, so a replaced file takes effect without a restart). `None`:
    /// accept any certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented when the server asks for one (mutual TLS). `None`: the
    /// client sends no certificate, and a server requiring one fails the check.
    pub client_cert: Option<ClientIdentity>,
}

/// A client certificate and its private key, both PEM files (read at every probe).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The client certificate, optionally followed by its intermediate CA certificates
    /// (leaf first, like OpenSSL's certificate chain files).
    pub cert_file: PathBuf,
    /// The unencrypted private key of the certificate (PKCS#8, PKCS#1 RSA or SEC1 EC).
    /// Encrypted keys are refused: decrypt them with `openssl pkey -in KEY -out PLAIN`.
    pub key_file: PathBuf,
}

impl ClientIdentity {
    /// The certificate (chain) in `cert_file` with the key in `key_file`.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        ClientIdentity {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
        }
    }

    /// Read both files: the chain (leaf first) and the key. Errors name the file.
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let cert_what = format!("client certificate file {}", self.cert_file.display());
        let pem_text = std::fs::read(&self.cert_file).map_err(|e| format!("{cert_what}: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(&pem_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{cert_what}: {e}"))?;
        if chain.is_empty() {
            return Err(format!("{cert_what}: no PEM CERTIFICATE found"));
        }
        let key_what = format!("client key file {}", self.key_file.display());
        let pem_text = std::fs::read(&self.key_file).map_err(|e| format!("{key_what}: {e}"))?;
        if is_encrypted_key(&pem_text) {
            // rustls has no PEM decryption; say how to get a key it can use.
            return Err(format!(
                "{key_what}: the private key is encrypted, which is not supported: decrypt it \
                 (openssl pkey -in {0} -out {0}.plain), keep the copy readable by the checker \
                 only, and use that",
                self.key_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem_text).map_err(|e| match e {
            pem::Error::NoItemsFound => format!("{key_what}: no PEM PRIVATE KEY found"),
            e => format!("{key_what}: {e}"),
        })?;
        Ok((chain, key))
    }

    /// Describe a rustls error from pairing the certificate with the key.
    fn pairing_error(&self, e: rustls::Error) -> String {
        match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "client certificate file {} and key file {} do not match (the key is not the \
                 certificate's)",
                self.cert_file.display(),
                self.key_file.display()
            ),
            rustls::Error::InvalidCertificate(e) => format!(
                "client certificate file {}: unusable certificate: {e}",
                self.cert_file.display()
            ),
            e => format!(
                "client key file {}: unusable key: {e}",
                self.key_file.display()
            ),
        }
    }
}

/// PKCS#8 `ENCRYPTED PRIVATE KEY` or a legacy OpenSSL key with `Proc-Type: 4,ENCRYPTED`.
fn is_encrypted_key(pem_text: &[u8]) -> bool {
    let has = |needle: &[u8]| super::contains(pem_text, needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

impl TlsCheck {
    /// No verification (ldirectord / keepalived `SSL_GET` semantics).
    pub fn insecure() -> Self {
        TlsCheck::default()
    }

    /// Verify the certificate against the CA certificates of `ca_file` (PEM) and the name
    /// `server_name` (`None`: the Host name of the check, else the endpoint address).
    pub fn verified(ca_file: impl Into<PathBuf>, server_name: Option<String>) -> Self {
        TlsCheck {
            server_name,
            ca_file: Some(ca_file.into()),
            client_cert: None,
        }
    }

    /// The same check presenting the client certificate `cert_file` with its key `key_file`
    /// (PEM files) to servers that ask for one.
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some(ClientIdentity::new(cert_file, key_file));
        self
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate but still checks that the handshake was signed by the key of the
/// presented certificate (so the peer really holds a key; it is just not trusted by name).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The shared client configuration of unverified checks (built once).
fn insecure_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let p = provider();
            let mut c = ClientConfig::builder_with_provider(p.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(p)))
                .with_no_client_auth();
            c.resumption = Resumption::disabled();
            Ok(Arc::new(c))
        })
        .clone()
}

/// The CA certificates of `ca_file`.
fn load_roots(ca_file: &Path) -> Result<RootCertStore, String> {
    let what = || format!("CA file {}", ca_file.display());
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{}: {e}", what()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", what()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable certificate: {e}", what()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM CERTIFICATE found", what()));
    }
    Ok(roots)
}

/// The client configuration of `tls`: the shared one when nothing is read from files, else
/// one built from the files as they are now.
fn client_config(tls: &TlsCheck) -> Result<Arc<ClientConfig>, String> {
    if tls.ca_file.is_none() && tls.client_cert.is_none() {
        return insecure_config();
    }
    let p = provider();
    let builder = ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &tls.ca_file {
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(p))),
        Some(f) => builder.with_root_certificates(load_roots(f)?),
    };
    let mut c = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (chain, key) = id.load()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| id.pairing_error(e))?
        }
    };
    c.resumption = Resumption::disabled();
    Ok(Arc::new(c))
}

/// The host part of a Host header value: `name:port` -> `name`, `[v6]:port` -> `v6`.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match host.split_once(':') {
        // Exactly one colon: a port. More: a bare IPv6 address.
        Some((h, p)) if !p.contains(':') => h,
        _ => host,
    }
}

/// The name for SNI and verification: explicit server name, else the Host name, else the
/// endpoint address (which sends no SNI).
pub fn server_name_for(
    tls: &TlsCheck,
    host: Option<&str>,
    target: SocketAddr,
) -> Result<ServerName<'static>, String> {
    match tls.server_name.as_deref().or(host.map(host_without_port)) {
        Some(n) if !n.is_empty() => {
            if let Ok(ip) = n.parse::<IpAddr>() {
                return Ok(ServerName::IpAddress(ip.into()));
            }
            ServerName::try_from(n.to_string())
                .map_err(|e| format!("TLS server name {n:?} for {target}: {e}"))
        }
        _ => Ok(ServerName::IpAddress(target.ip().into())),
    }
}

/// Run the TLS handshake with `target` over the connected `tcp`. Errors name the endpoint,
/// the name used and what failed (certificate verification, protocol, CA file, client
/// certificate or key file).
///
/// A server that rejects the client certificate (or its absence) does so after the client
/// finished its side of a TLS 1.3 handshake: that shows as a fatal alert at the first read.
pub async fn handshake(
    tcp: TcpStream,
    target: SocketAddr,
    tls: &TlsCheck,
    host: Option<&str>,
) -> Result<TlsStream<TcpStream>, String> {
    let config = client_config(tls).map_err(|e| format!("TLS check of {target}: {e}"))?;
    let name = server_name_for(tls, host, target)?;
    let shown = name.to_str().into_owned();
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {target} (name {shown}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("www.example.com"), "www.example.com");
        assert_eq!(host_without_port("www.example.com:8443"), "www.example.com");
        assert_eq!(host_without_port("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_without_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(host_without_port("10.0.0.1:443"), "10.0.0.1");
    }

    #[test]
    fn server_name_choice() {
        let t: SocketAddr = "10.1.2.3:443".parse().unwrap();
        let name = |tls: &TlsCheck, host| server_name_for(tls, host, t).unwrap();
        let plain = TlsCheck::insecure();
        assert_eq!(
            name(&plain, None),
            ServerName::IpAddress("10.1.2.3".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            name(&plain, Some("www.example.com:8443")),
            ServerName::try_from("www.example.com").unwrap()
        );
        assert_eq!(
            name(&plain, Some("[::1]:443")),
            ServerName::IpAddress("::1".parse::<IpAddr>().unwrap().into())
        );
        let explicit = TlsCheck {
            server_name: Some("svc.internal".into()),
            ca_file: None,
            client_cert: None,
        };
        assert_eq!(
            name(&explicit, Some("www.example.com")),
            ServerName::try_from("svc.internal").unwrap()
        );
        let bad = TlsCheck {
            server_name: Some("bad name!".into()),
            ca_file: None,
            client_cert: None,
        };
        let e = server_name_for(&bad, None, t).unwrap_err();
        assert!(e.contains("10.1.2.3:443") && e.contains("bad name!"), "{e}");
    }

    #[test]
    fn missing_or_empty_ca_file_is_reported() {
        let e = load_roots(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = load_roots(&f).unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        assert!(insecure_config().is_ok());
    }

    /// A self-signed certificate and its key as PEM text.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn client_identity_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, text: &str| {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            f
        };
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert_f = put("client.crt", &cert);
        let key_f = put("client.key", &key);
        let with = |c: &Path, k: &Path| TlsCheck::insecure().with_client_cert(c, k);
        assert!(client_config(&with(&cert_f, &key_f)).is_ok());
        // One file holding both (a common layout) serves as either.
        let both = put("both.pem", &format!("{cert}{key}"));
        assert!(client_config(&with(&both, &both)).is_ok());

        let missing = dir.path().join("missing.key");
        let e = client_config(&with(&cert_f, &missing)).unwrap_err();
        assert!(
            e.contains("client key file") && e.contains("missing.key"),
            "{e}"
        );
        let e = client_config(&with(&missing, &key_f)).unwrap_err();
        assert!(e.contains("client certificate file"), "{e}");

        // A certificate where the key should be, and the other way round.
        let e = client_config(&with(&cert_f, &cert_f)).unwrap_err();
        assert!(
            e.contains("no PEM PRIVATE KEY") && e.contains("client.crt"),
            "{e}"
        );
        let e = client_config(&with(&key_f, &key_f)).unwrap_err();
        assert!(
            e.contains("no PEM CERTIFICATE") && e.contains("client.key"),
            "{e}"
        );

        let wrong = put("other.key", &other_key);
        let e = client_config(&with(&cert_f, &wrong)).unwrap_err();
        assert!(
            e.contains("do not match") && e.contains("client.crt") && e.contains("other.key"),
            "{e}"
        );

        let pkcs8 = put(
            "enc8.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0w\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let e = client_config(&with(&cert_f, &pkcs8)).unwrap_err();
        assert!(e.contains("encrypted") && e.contains("openssl pkey"), "{e}");
        let legacy = put(
            "enc1.key",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        let e = client_config(&with(&cert_f, &legacy)).unwrap_err();
        assert!(e.contains("encrypted") && e.contains("enc1.key"), "{e}");

        // The files are read at every call: a replaced key takes effect.
        std::fs::write(&key_f, &other_key).unwrap();
        assert!(client_config(&with(&cert_f, &key_f)).is_err());
        std::fs::write(&key_f, &key).unwrap();
        assert!(client_config(&with(&cert_f, &key_f)).is_ok());
    }

    #[test]
    fn client_identity_is_part_of_the_probe_key() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let h = |t: &TlsCheck| {
            let mut s = DefaultHasher::new();
            t.hash(&mut s);
            s.finish()
        };
        let plain = TlsCheck::insecure();
        let a = TlsCheck::insecure().with_client_cert("/a.crt", "/a.key");
        let b = TlsCheck::insecure().with_client_cert("/b.crt", "/a.key");
        assert_ne!(plain, a);
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        assert_eq!(h(&a), h(&a.clone()));
        assert_ne!(h(&a), h(&b));
    }
}
