//! HTTPS checks against in-process TLS servers on 127.0.0.1 (no root needed): certificates
//! made by rcgen in the test, servers by tokio-rustls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{BodyMatch, CheckKind, CheckSpec, ProbeKey, ProbeOutcome, TlsCheck};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A CA, and a server certificate it signed for `www.example.test` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn pki(ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["www.example.test".to_string(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "www.example.test");
    let leaf_cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key_der: key.serialize_der(),
    }
}

/// What the server saw of each connection: SNI, request head, client certificate subject.
#[derive(Default)]
struct Seen {
    sni: Vec<Option<String>>,
    requests: Vec<String>,
    /// Per connection: the DER of the client's end-entity certificate, if it sent one.
    client_certs: Vec<Option<Vec<u8>>>,
}

/// How the test server ends a response.
#[derive(Clone, Copy)]
enum Close {
    /// TLS close_notify, then FIN.
    Clean,
    /// Drop the connection without close_notify (common in the wild).
    Abrupt,
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A TLS acceptor presenting `p`'s certificate chain.
fn acceptor(p: &Pki) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            p.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key_der.clone())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(cfg))
}

/// A TLS acceptor presenting `p`'s certificate chain that requires a client certificate
/// signed by `client_ca` (DER), offering only TLS 1.2 when `tls12_only`.
fn mtls_acceptor(p: &Pki, client_ca: &CertificateDer<'static>, tls12_only: bool) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(client_ca.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let builder = ServerConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let cfg = builder
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            p.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key_der.clone())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(cfg))
}

/// A CA for client certificates.
struct ClientCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn client_ca(name: &str) -> ClientCa {
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    ClientCa {
        cert: ca.self_signed(&key).unwrap(),
        key,
    }
}

/// Write a client certificate signed by `ca` and its key as PEM files `NAME.crt`, `NAME.key`.
fn write_client_identity(dir: &tempfile::TempDir, ca: &ClientCa, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (cert_f, key_f) = (
        dir.path().join(format!("{name}.crt")),
        dir.path().join(format!("{name}.key")),
    );
    std::fs::write(&cert_f, cert.pem()).unwrap();
    std::fs::write(&key_f, key.serialize_pem()).unwrap();
    (cert_f, key_f)
}

/// An HTTPS server answering every request with `response`.
async fn https_server(
    p: &Pki,
    response: &'static str,
    close: Close,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    https_server_with(acceptor(p), response, close).await
}

/// An HTTPS server behind `acceptor` answering every request with `response`.
async fn https_server_with(
    acceptor: TlsAcceptor,
    response: &'static str,
    close: Close,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                // Handshake failures (the client rejected our certificate) end the connection.
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = s.get_ref().1.server_name().map(str::to_string);
                let client = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                let head = read_head(&mut s).await;
                {
                    let mut g = seen.lock().unwrap();
                    g.sni.push(sni);
                    g.requests.push(head);
                    g.client_certs.push(client);
                }
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.flush().await;
                if let Close::Clean = close {
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (addr, seen)
}

/// A plain-HTTP server (an HTTPS check against it must fail).
async fn http_server(response: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Like a real server: a request gets the response, anything else (a TLS
                // ClientHello) a 400 and the connection closed.
                let mut first = [0u8; 3];
                if s.read_exact(&mut first).await.is_err() {
                    return;
                }
                if &first == b"GET" {
                    let _ = read_head(&mut s).await;
                    let _ = s.write_all(response.as_bytes()).await;
                } else {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                }
            });
        }
    });
    addr
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstatus: healthy\n";

fn key(target: SocketAddr, host: Option<&str>, expect: Option<&str>, tls: TlsCheck) -> ProbeKey {
    let mut spec = CheckSpec::new(CheckKind::Http {
        path: "/health".into(),
        host: host.map(str::to_string),
        expect_status: 200.into(),
        expect_body: expect.map(BodyMatch::from),
        expect_md5: None,
        tls: Some(tls),
    });
    spec.timeout = Duration::from_secs(3);
    ProbeKey { target, spec }
}

fn down_reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Down(r) => r,
        other => panic!("expected down, got {other:?}"),
    }
}

fn write_ca(dir: &tempfile::TempDir, name: &str, pem: &str) -> PathBuf {
    let f = dir.path().join(name);
    std::fs::write(&f, pem).unwrap();
    f
}

#[tokio::test]
async fn https_up_on_status_and_substring_with_sni() {
    let p = pki("Test CA");
    let (addr, seen) = https_server(&p, OK, Close::Clean).await;
    let o = run_probe(&key(
        addr,
        Some("www.example.test"),
        Some("healthy"),
        TlsCheck::default(),
    ))
    .await;
    assert_eq!(o, ProbeOutcome::Up);
    let g = seen.lock().unwrap();
    assert_eq!(g.sni, vec![Some("www.example.test".to_string())]);
    assert!(
        g.requests[0].starts_with("GET /health HTTP/1.0\r\n"),
        "{:?}",
        g.requests
    );
    assert!(
        g.requests[0].contains("\r\nHost: www.example.test\r\n"),
        "{:?}",
        g.requests
    );
}

#[tokio::test]
async fn https_without_close_notify_still_counts() {
    let p = pki("Test CA");
    let (addr, _) = https_server(&p, OK, Close::Abrupt).await;
    let o = run_probe(&key(addr, None, Some("healthy"), TlsCheck::default())).await;
    assert_eq!(o, ProbeOutcome::Up);
}

#[tokio::test]
async fn no_sni_for_an_address() {
    let p = pki("Test CA");
    let (addr, seen) = https_server(&p, OK, Close::Clean).await;
    assert_eq!(
        run_probe(&key(addr, None, None, TlsCheck::default())).await,
        ProbeOutcome::Up
    );
    let with_port = format!("127.0.0.1:{}", addr.port());
    assert_eq!(
        run_probe(&key(addr, Some(&with_port), None, TlsCheck::default())).await,
        ProbeOutcome::Up
    );
    let g = seen.lock().unwrap();
    assert_eq!(g.sni, vec![None, None]);
    assert!(
        g.requests[0].contains(&format!("\r\nHost: {addr}\r\n")),
        "{:?}",
        g.requests
    );
}

#[tokio::test]
async fn https_down_on_wrong_status_or_missing_text() {
    let p = pki("Test CA");
    let (busy, _) = https_server(&p, "HTTP/1.1 503 Busy\r\n\r\nhealthy", Close::Clean).await;
    let r = down_reason(run_probe(&key(busy, None, Some("healthy"), TlsCheck::default())).await);
    assert!(r.contains("503") && r.contains(&busy.to_string()), "{r}");
    let (ok, _) = https_server(&p, OK, Close::Clean).await;
    let r = down_reason(run_probe(&key(ok, None, Some("sick"), TlsCheck::default())).await);
    assert!(r.contains("lacks \"sick\""), "{r}");
}

#[tokio::test]
async fn https_down_against_plain_http_and_closed_port() {
    let plain = http_server(OK).await;
    // The same server passes a plain HTTP check: the failure below is the TLS.
    let mut plain_key = key(plain, None, Some("healthy"), TlsCheck::default());
    if let CheckKind::Http { tls, .. } = &mut plain_key.spec.kind {
        *tls = None;
    }
    assert_eq!(run_probe(&plain_key).await, ProbeOutcome::Up);
    let r = down_reason(run_probe(&key(plain, None, Some("healthy"), TlsCheck::default())).await);
    eprintln!("plain HTTP server: {r}");
    assert!(
        r.contains("TLS handshake with") && r.contains(&plain.to_string()),
        "{r}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = down_reason(run_probe(&key(closed, None, None, TlsCheck::default())).await);
    assert!(r.contains(&format!("connect {closed}")), "{r}");
}

#[tokio::test]
async fn https_times_out_on_a_silent_server() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut conns: Vec<TcpStream> = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(s); // accept, never answer the ClientHello
        }
    });
    let mut k = key(addr, None, None, TlsCheck::default());
    k.spec.timeout = Duration::from_millis(300);
    let r = down_reason(run_probe(&k).await);
    assert!(r.contains("no answer within 300 ms"), "{r}");
    hold.abort();
}

#[tokio::test]
async fn verification_is_opt_in_and_checks_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Right CA");
    let other = pki("Other CA");
    let right_ca = write_ca(&dir, "right.pem", &p.ca_pem);
    let wrong_ca = write_ca(&dir, "wrong.pem", &other.ca_pem);
    let (addr, _) = https_server(&p, OK, Close::Clean).await;
    let host = Some("www.example.test");

    // Untrusted issuer.
    let r =
        down_reason(run_probe(&key(addr, host, None, TlsCheck::verified(&wrong_ca, None))).await);
    eprintln!("untrusted: {r}");
    assert!(
        r.contains(&addr.to_string()) && r.contains("certificate"),
        "{r}"
    );
    // Right CA, name from the Host header.
    assert_eq!(
        run_probe(&key(
            addr,
            host,
            Some("healthy"),
            TlsCheck::verified(&right_ca, None)
        ))
        .await,
        ProbeOutcome::Up
    );
    // Right CA, explicit name.
    let named = TlsCheck::verified(&right_ca, Some("www.example.test".into()));
    assert_eq!(
        run_probe(&key(addr, None, None, named)).await,
        ProbeOutcome::Up
    );
    // Right CA, name the certificate does not carry.
    let r = down_reason(
        run_probe(&key(
            addr,
            Some("other.example.test"),
            None,
            TlsCheck::verified(&right_ca, None),
        ))
        .await,
    );
    assert!(
        r.contains("other.example.test") && r.contains("certificate"),
        "{r}"
    );
    // Right CA, no name at all: the endpoint address must be in the certificate (it is).
    assert_eq!(
        run_probe(&key(addr, None, None, TlsCheck::verified(&right_ca, None))).await,
        ProbeOutcome::Up
    );
    // A CA file that cannot be read names the file and the endpoint.
    let missing = dir.path().join("missing.pem");
    let r =
        down_reason(run_probe(&key(addr, host, None, TlsCheck::verified(&missing, None))).await);
    assert!(
        r.contains("missing.pem") && r.contains(&addr.to_string()),
        "{r}"
    );
    // Without verification the other CA's server is fine.
    let (other_addr, _) = https_server(&other, OK, Close::Clean).await;
    assert_eq!(
        run_probe(&key(other_addr, host, None, TlsCheck::insecure())).await,
        ProbeOutcome::Up
    );
}

/// What the TLS line server does after the handshake.
#[derive(Clone, Copy)]
enum Greeting {
    /// Send this text, then wait for the client to go.
    Send(&'static str),
    /// Send this text and close (close_notify, FIN).
    SendAndClose(&'static str),
    /// Read a line, answer it with this text, wait for the client to go.
    Answer(&'static str),
    /// Close right after the handshake.
    Close,
    /// A POP3 server whose only password is this: greets, answers USER / PASS / QUIT.
    Pop3(&'static str),
}

/// A POP3S/IMAPS-like server whose behaviour can be switched; records the SNI of each
/// connection.
async fn tls_line_server(p: &Pki) -> (SocketAddr, Arc<Mutex<Greeting>>, Arc<Mutex<Seen>>) {
    tls_line_server_with(acceptor(p)).await
}

/// [`tls_line_server`] behind `acceptor`.
async fn tls_line_server_with(
    acceptor: TlsAcceptor,
) -> (SocketAddr, Arc<Mutex<Greeting>>, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mode = Arc::new(Mutex::new(Greeting::Send("+OK ready\r\n")));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (mode2, seen2) = (mode.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, mode, seen) = (acceptor.clone(), mode2.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = s.get_ref().1.server_name().map(str::to_string);
                seen.lock().unwrap().sni.push(sni);
                let m = *mode.lock().unwrap();
                let mut buf = [0u8; 256];
                match m {
                    Greeting::Send(t) => {
                        let _ = s.write_all(t.as_bytes()).await;
                        let _ = s.flush().await;
                    }
                    Greeting::SendAndClose(t) => {
                        let _ = s.write_all(t.as_bytes()).await;
                        let _ = s.shutdown().await;
                        return;
                    }
                    Greeting::Answer(t) => {
                        let mut line = Vec::new();
                        while !line.contains(&b'\n') {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => line.extend_from_slice(&buf[..n]),
                            }
                        }
                        seen.lock()
                            .unwrap()
                            .requests
                            .push(String::from_utf8_lossy(&line).into_owned());
                        let _ = s.write_all(t.as_bytes()).await;
                        let _ = s.flush().await;
                    }
                    Greeting::Close => {
                        let _ = s.shutdown().await;
                        return;
                    }
                    Greeting::Pop3(password) => {
                        let _ = s.write_all(b"+OK POP3S ready\r\n").await;
                        let _ = s.flush().await;
                        let mut pending = Vec::new();
                        loop {
                            let Some(end) = pending.iter().position(|&b| b == b'\n') else {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                                }
                                continue;
                            };
                            let line: Vec<u8> = pending.drain(..=end).collect();
                            let line = String::from_utf8_lossy(&line).trim_end().to_string();
                            let reply = match line.split_once(' ') {
                                Some(("USER", _)) => "+OK\r\n",
                                Some(("PASS", p)) if p == password => "+OK logged in\r\n",
                                Some(("PASS", _)) => "-ERR authentication failed\r\n",
                                _ if line == "QUIT" => "+OK bye\r\n",
                                _ => "-ERR what?\r\n",
                            };
                            seen.lock().unwrap().requests.push(line);
                            let _ = s.write_all(reply.as_bytes()).await;
                            let _ = s.flush().await;
                        }
                    }
                }
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, mode, seen)
}

fn banner_key(target: SocketAddr, send: Option<&str>, expect: &str, tls: TlsCheck) -> ProbeKey {
    let mut spec = CheckSpec::new(CheckKind::Banner {
        send: send.map(str::to_string),
        expect: expect.into(),
        steps: Vec::new(),
        tls: Some(tls),
    });
    spec.timeout = Duration::from_secs(3);
    ProbeKey { target, spec }
}

#[tokio::test]
async fn tls_banner_follows_the_greeting() {
    let p = pki("Test CA");
    let (addr, mode, seen) = tls_line_server(&p).await;
    let k = banner_key(addr, None, "+OK", TlsCheck::insecure());
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);

    *mode.lock().unwrap() = Greeting::SendAndClose("-ERR maintenance\r\n");
    let r = down_reason(run_probe(&k).await);
    assert!(
        r.contains("closed the connection") && r.contains("-ERR maintenance"),
        "{r}"
    );

    *mode.lock().unwrap() = Greeting::Close;
    let r = down_reason(run_probe(&k).await);
    assert!(r.contains("closed the connection after 0 bytes"), "{r}");

    *mode.lock().unwrap() = Greeting::Send("* OK IMAP4rev1 ready\r\n");
    assert_eq!(
        run_probe(&banner_key(addr, None, "* OK", TlsCheck::insecure())).await,
        ProbeOutcome::Up
    );
    // No name: no SNI.
    assert!(seen.lock().unwrap().sni.iter().all(Option::is_none));
}

#[tokio::test]
async fn tls_banner_sends_request_and_sni() {
    let p = pki("Test CA");
    let (addr, mode, seen) = tls_line_server(&p).await;
    *mode.lock().unwrap() = Greeting::Answer("+OK capability list follows\r\n");
    let named = TlsCheck {
        server_name: Some("www.example.test".into()),
        ca_file: None,
        client_cert: None,
    };
    let k = banner_key(addr, Some("CAPA\r\n"), "capability", named);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    let g = seen.lock().unwrap();
    assert_eq!(g.sni, vec![Some("www.example.test".to_string())]);
    assert_eq!(g.requests, vec!["CAPA\r\n".to_string()]);
}

#[tokio::test]
async fn tls_banner_down_against_plain_text_and_untrusted_ca() {
    // A plain POP3 server: the TLS handshake fails.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"+OK plain POP3 ready\r\n").await;
                let mut b = [0u8; 512];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let r = down_reason(run_probe(&banner_key(plain, None, "+OK", TlsCheck::insecure())).await);
    assert!(
        r.contains("TLS handshake with") && r.contains(&plain.to_string()),
        "{r}"
    );
    // Verification is opt-in for banners too.
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Right CA");
    let other = pki("Other CA");
    let wrong_ca = write_ca(&dir, "wrong.pem", &other.ca_pem);
    let right_ca = write_ca(&dir, "right.pem", &p.ca_pem);
    let (addr, _, _) = tls_line_server(&p).await;
    let r = down_reason(
        run_probe(&banner_key(
            addr,
            None,
            "+OK",
            TlsCheck::verified(&wrong_ca, None),
        ))
        .await,
    );
    assert!(r.contains("certificate"), "{r}");
    assert_eq!(
        run_probe(&banner_key(
            addr,
            None,
            "+OK",
            TlsCheck::verified(&right_ca, Some("www.example.test".into())),
        ))
        .await,
        ProbeOutcome::Up
    );
}

#[tokio::test]
async fn pops_login_dialogue_over_tls() {
    let p = pki("Test CA");
    let (addr, mode, seen) = tls_line_server(&p).await;
    *mode.lock().unwrap() = Greeting::Pop3("s3cret");
    // The check ldirectord.cf's pops service with a login gives.
    let cf = format!(
        "virtual=10.0.0.1:995\n\treal={addr} masq\n\tlogin=alice\n\tpasswd=\"s3cret\"\n\tvirtualhost=www.example.test\n"
    );
    let c = ha_lvs::ldirectord::parse_ldirectord(&cf, "pops.cf").unwrap();
    let mut spec = c.monitor.services[0].reals[0].check.clone().unwrap();
    spec.timeout = Duration::from_secs(1);
    let mut k = ProbeKey { target: addr, spec };
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    assert_eq!(
        seen.lock().unwrap().requests[..2],
        ["USER alice", "PASS s3cret"]
    );
    assert_eq!(
        seen.lock().unwrap().sni,
        vec![Some("www.example.test".to_string())]
    );

    *mode.lock().unwrap() = Greeting::Pop3("other");
    let r = down_reason(run_probe(&k).await);
    assert!(
        r.contains("step 2 (PASS ***)") && r.contains("-ERR authentication failed"),
        "{r}"
    );
    assert!(!r.contains("s3cret"), "{r}");

    // The same dialogue against a plain-text server fails at the handshake.
    k.target = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"+OK plain\r\n").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        a
    };
    let r = down_reason(run_probe(&k).await);
    assert!(r.contains("TLS handshake with"), "{r}");
}

/// Servers requiring mutual TLS: the check is up with a client certificate of the CA they
/// trust, down with none, with another CA's, or with a key file that is missing; the files
/// are read at every probe.
#[tokio::test]
async fn mutual_tls_needs_the_right_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Server CA");
    let trusted = client_ca("Client CA");
    let stranger = client_ca("Other client CA");
    let (cert, key) = write_client_identity(&dir, &trusted, "lb1");
    let (other_cert, other_key) = write_client_identity(&dir, &stranger, "intruder");
    let acceptor = mtls_acceptor(&p, trusted.cert.der(), false);
    let (addr, seen) = https_server_with(acceptor, OK, Close::Clean).await;
    let host = Some("www.example.test");

    let with_cert = TlsCheck::insecure().with_client_cert(&cert, &key);
    let k = key_for(addr, host, with_cert.clone());
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    let presented = std::fs::read_to_string(&cert).unwrap();
    {
        let g = seen.lock().unwrap();
        let der = g.client_certs[0].clone().expect("a client certificate");
        let pem_der = CertificateDer::from_pem_slice(presented.as_bytes()).unwrap();
        assert_eq!(der, pem_der.to_vec(), "the server got our certificate");
    }

    // No client certificate: TLS 1.3 servers reject it after the handshake, with an alert.
    let r = down_reason(run_probe(&key_for(addr, host, TlsCheck::insecure())).await);
    eprintln!("no client certificate: {r}");
    assert!(
        r.contains(&addr.to_string()) && r.contains("CertificateRequired"),
        "{r}"
    );

    // A certificate of a CA the server does not trust.
    let wrong = TlsCheck::insecure().with_client_cert(&other_cert, &other_key);
    let r = down_reason(run_probe(&key_for(addr, host, wrong)).await);
    eprintln!("other CA: {r}");
    assert!(
        r.contains(&addr.to_string()) && r.contains("alert") && r.contains("UnknownCA"),
        "{r}"
    );

    // A key file that is not there: down, naming the file, before any TLS handshake.
    let missing = dir.path().join("gone.key");
    let before = seen.lock().unwrap().requests.len();
    let r = down_reason(
        run_probe(&key_for(
            addr,
            host,
            TlsCheck::insecure().with_client_cert(&cert, &missing),
        ))
        .await,
    );
    assert!(
        r.contains("client key file") && r.contains("gone.key") && r.contains(&addr.to_string()),
        "{r}"
    );
    // A key that belongs to another certificate.
    let r = down_reason(
        run_probe(&key_for(
            addr,
            host,
            TlsCheck::insecure().with_client_cert(&cert, &other_key),
        ))
        .await,
    );
    assert!(
        r.contains("do not match") && r.contains("lb1.crt") && r.contains("intruder.key"),
        "{r}"
    );
    assert_eq!(seen.lock().unwrap().requests.len(), before);

    // Files are read at every probe: replacing them with the other CA's identity takes the
    // check down, putting the right ones back brings it up, with the same TlsCheck.
    let (good_cert, good_key) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    std::fs::copy(&other_cert, &cert).unwrap();
    std::fs::copy(&other_key, &key).unwrap();
    down_reason(run_probe(&k).await);
    std::fs::write(&cert, good_cert).unwrap();
    std::fs::write(&key, good_key).unwrap();
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);

    // With verification of the server as well.
    let ca_file = write_ca(&dir, "server-ca.pem", &p.ca_pem);
    let both = TlsCheck::verified(&ca_file, None).with_client_cert(&cert, &key);
    assert_eq!(
        run_probe(&key_for(addr, host, both)).await,
        ProbeOutcome::Up
    );
}

/// Over TLS 1.2 the server rejects a missing client certificate during the handshake.
#[tokio::test]
async fn mutual_tls_over_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Server CA");
    let trusted = client_ca("Client CA");
    let (cert, key) = write_client_identity(&dir, &trusted, "lb1");
    let acceptor = mtls_acceptor(&p, trusted.cert.der(), true);
    let (addr, _) = https_server_with(acceptor, OK, Close::Clean).await;
    let with_cert = TlsCheck::insecure().with_client_cert(&cert, &key);
    assert_eq!(
        run_probe(&key_for(addr, None, with_cert)).await,
        ProbeOutcome::Up
    );
    let r = down_reason(run_probe(&key_for(addr, None, TlsCheck::insecure())).await);
    eprintln!("TLS 1.2, no client certificate: {r}");
    assert!(
        r.contains(&format!("TLS handshake with {addr}")) && r.contains("alert"),
        "{r}"
    );
}

/// The TLS banner check presents the client certificate too (POP3S with mutual TLS).
#[tokio::test]
async fn tls_banner_with_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Server CA");
    let trusted = client_ca("Client CA");
    let (cert, key) = write_client_identity(&dir, &trusted, "lb1");
    let (addr, _, _) = tls_line_server_with(mtls_acceptor(&p, trusted.cert.der(), false)).await;
    let with_cert = TlsCheck::insecure().with_client_cert(&cert, &key);
    assert_eq!(
        run_probe(&banner_key(addr, None, "+OK", with_cert)).await,
        ProbeOutcome::Up
    );
    let r = down_reason(run_probe(&banner_key(addr, None, "+OK", TlsCheck::insecure())).await);
    assert!(r.contains(&addr.to_string()), "{r}");
}

/// keepalived.conf's global SSL block reaches the SSL_GET probe.
#[tokio::test]
async fn keepalived_ssl_block_gives_ssl_get_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki("Server CA");
    let trusted = client_ca("Client CA");
    let (cert, key) = write_client_identity(&dir, &trusted, "lb1");
    let (addr, _) = https_server_with(
        mtls_acceptor(&p, trusted.cert.der(), false),
        OK,
        Close::Clean,
    )
    .await;
    let conf = |ssl: &str| {
        format!(
            "{ssl}\nvirtual_server 10.0.0.1 443 {{\n real_server {} {} {{\n  SSL_GET {{\n   url {{ path /health }}\n  }}\n }}\n}}\n",
            addr.ip(),
            addr.port()
        )
    };
    let probe_of = |text: String| {
        let c = ha_lvs::keepalived::parse_keepalived(&text, "k.conf").unwrap();
        let mut spec = c.monitor.services[0].reals[0].check.clone().unwrap();
        spec.timeout = Duration::from_secs(3);
        ProbeKey { target: addr, spec }
    };
    let with_block = probe_of(conf(&format!(
        "SSL {{\n certificate {}\n key {}\n}}",
        cert.display(),
        key.display()
    )));
    assert_eq!(run_probe(&with_block).await, ProbeOutcome::Up);
    let without = probe_of(conf(""));
    down_reason(run_probe(&without).await);
}

fn key_for(target: SocketAddr, host: Option<&str>, tls: TlsCheck) -> ProbeKey {
    key(target, host, None, tls)
}
