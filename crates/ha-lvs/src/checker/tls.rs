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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// TLS settings of an HTTPS check ([`super::CheckKind::Http`] with `tls: Some(..)`).
///
/// `TlsCheck::default()` is the ldirectord/keepalived behaviour: no certificate verification,
/// SNI = the check's Host name when it is a DNS name.
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
        }
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

/// A client configuration trusting the CA certificates of `ca_file`.
fn verifying_config(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
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
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
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
/// the name used and what failed (certificate verification, protocol, CA file).
pub async fn handshake(
    tcp: TcpStream,
    target: SocketAddr,
    tls: &TlsCheck,
    host: Option<&str>,
) -> Result<TlsStream<TcpStream>, String> {
    let config = match &tls.ca_file {
        None => insecure_config()?,
        Some(f) => verifying_config(f).map_err(|e| format!("TLS check of {target}: {e}"))?,
    };
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
        };
        assert_eq!(
            name(&explicit, Some("www.example.com")),
            ServerName::try_from("svc.internal").unwrap()
        );
        let bad = TlsCheck {
            server_name: Some("bad name!".into()),
            ca_file: None,
        };
        let e = server_name_for(&bad, None, t).unwrap_err();
        assert!(e.contains("10.1.2.3:443") && e.contains("bad name!"), "{e}");
    }

    #[test]
    fn missing_or_empty_ca_file_is_reported() {
        let e = verifying_config(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("ha-lvs-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = verifying_config(&f).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        assert!(insecure_config().is_ok());
    }
}
