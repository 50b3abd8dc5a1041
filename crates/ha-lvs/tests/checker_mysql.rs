//! The MySQL check against a scripted server on loopback speaking the client/server protocol
//! (no MySQL needed): logins with mysql_native_password (direct and after a plugin switch)
//! and caching_sha2_password's fast path, a refused login, a server too busy to greet, a
//! query returning rows or none or failing, and full authentication it cannot do. The server
//! checks the password proof with its own SHA code and records the goodbye.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_lvs::checker::mysql::{MysqlCheck, frame};
use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "s3cret";
const SCRAMBLE: [u8; 20] = *b"abcdefghijklmnopqrst";
const SWITCHED: [u8; 20] = *b"ABCDEFGHIJKLMNOPQRST";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    Native,
    SwitchToNative,
    Sha2Fast,
    Sha2Full,
    Busy,
    QueryRows(usize),
    QueryError,
}

fn native(scramble: &[u8], pw: &str) -> Vec<u8> {
    let h1 = Sha1::digest(pw.as_bytes());
    let h2 = Sha1::digest(h1);
    let h3 = Sha1::digest([scramble, h2.as_slice()].concat());
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn sha2_fast(scramble: &[u8], pw: &str) -> Vec<u8> {
    let h1 = Sha256::digest(pw.as_bytes());
    let h2 = Sha256::digest(h1);
    let h3 = Sha256::digest([h2.as_slice(), scramble].concat());
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

fn greeting(plugin: &str) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"10.11.6-MariaDB\0");
    p.extend_from_slice(&9u32.to_le_bytes());
    p.extend_from_slice(&SCRAMBLE[..8]);
    p.push(0);
    p.extend_from_slice(&0xf7ffu16.to_le_bytes());
    p.push(33);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&0x81ffu16.to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(&SCRAMBLE[8..]);
    p.push(0);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];
const EOF: &[u8] = &[0xfe, 0, 0, 2, 0];

fn err(code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#28000");
    p.extend_from_slice(msg.as_bytes());
    p
}

async fn read(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.unwrap();
    let mut p = vec![0u8; u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize];
    s.read_exact(&mut p).await.unwrap();
    (h[3], p)
}

async fn send(s: &mut TcpStream, seq: u8, p: &[u8]) {
    s.write_all(&frame(seq, p)).await.unwrap();
}

/// The auth data of a handshake response (after user\0 and its length byte).
fn auth_of(resp: &[u8]) -> (String, Vec<u8>) {
    let rest = &resp[32..];
    let end = rest.iter().position(|&c| c == 0).unwrap();
    let user = String::from_utf8(rest[..end].to_vec()).unwrap();
    let n = rest[end + 1] as usize;
    (user, rest[end + 2..end + 2 + n].to_vec())
}

/// One scripted session; returns whether the client said goodbye with COM_QUIT.
async fn session(mut s: TcpStream, script: Script) -> bool {
    if script == Script::Busy {
        send(&mut s, 0, &err(1040, "Too many connections")).await;
        return false;
    }
    let sha2 = matches!(script, Script::Sha2Fast | Script::Sha2Full);
    let plugin = if sha2 {
        "caching_sha2_password"
    } else {
        "mysql_native_password"
    };
    let plugin = if script == Script::SwitchToNative {
        "auth_gssapi_client"
    } else {
        plugin
    };
    send(&mut s, 0, &greeting(plugin)).await;
    let (seq, resp) = read(&mut s).await;
    assert_eq!(seq, 1);
    let (user, auth) = auth_of(&resp);
    assert_eq!(user, "lvs");
    let good = match script {
        Script::SwitchToNative => {
            // The client answered with native_password; switch it to a fresh scramble.
            let mut sw = b"\xfemysql_native_password\0".to_vec();
            sw.extend_from_slice(&SWITCHED);
            sw.push(0);
            send(&mut s, 2, &sw).await;
            let (seq, auth) = read(&mut s).await;
            assert_eq!(seq, 3);
            send(&mut s, 4, OK).await;
            auth == native(&SWITCHED, PASSWORD)
        }
        Script::Sha2Fast => {
            send(&mut s, 2, &[1, 3]).await;
            send(&mut s, 3, OK).await;
            auth == sha2_fast(&SCRAMBLE, PASSWORD)
        }
        Script::Sha2Full => {
            send(&mut s, 2, &[1, 4]).await;
            return false;
        }
        _ if auth != native(&SCRAMBLE, PASSWORD) => {
            send(&mut s, 2, &err(1045, "Access denied for user 'lvs'")).await;
            return false;
        }
        _ => {
            send(&mut s, 2, OK).await;
            true
        }
    };
    assert!(good, "{script:?}: wrong password proof");
    if let Script::QueryRows(_) | Script::QueryError = script {
        let (seq, q) = read(&mut s).await;
        assert_eq!((seq, q.as_slice()), (0, b"\x03SELECT 1".as_slice()));
        if script == Script::QueryError {
            send(&mut s, 1, &err(1146, "Table 'x' doesn't exist")).await;
        } else {
            let Script::QueryRows(n) = script else {
                unreachable!()
            };
            send(&mut s, 1, &[1]).await;
            send(
                &mut s,
                2,
                b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0",
            )
            .await;
            send(&mut s, 3, EOF).await;
            for i in 0..n {
                send(&mut s, 4 + i as u8, &[1, b'1']).await;
            }
            send(&mut s, 4 + n as u8, EOF).await;
        }
    }
    let (seq, quit) = read(&mut s).await;
    seq == 0 && quit == [1]
}

/// A server running `script` for every connection; records each session's goodbye.
async fn server(script: Script) -> (SocketAddr, Arc<Mutex<Vec<bool>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let quits = Arc::new(Mutex::new(Vec::new()));
    let q = quits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let q = q.clone();
            tokio::spawn(async move {
                let bye = session(s, script).await;
                q.lock().unwrap().push(bye);
            });
        }
    });
    (addr, quits)
}

fn key(target: SocketAddr, password: &str, query: Option<&str>) -> ProbeKey {
    ProbeKey {
        target,
        spec: CheckSpec {
            timeout: Duration::from_secs(2),
            ..CheckSpec::new(CheckKind::Mysql(MysqlCheck {
                user: "lvs".into(),
                password: password.into(),
                database: None,
                query: query.map(str::to_string),
            }))
        },
    }
}

async fn probe(script: Script, password: &str, query: Option<&str>) -> (ProbeOutcome, Vec<bool>) {
    let (addr, quits) = server(script).await;
    let o = run_probe(&key(addr, password, query)).await;
    // Let the server finish reading the goodbye.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let q = quits.lock().unwrap().clone();
    (o, q)
}

fn down_with(o: &ProbeOutcome, needle: &str) -> bool {
    matches!(o, ProbeOutcome::Down(r) if r.contains(needle))
}

#[tokio::test]
async fn mysql_logins() {
    for script in [Script::Native, Script::SwitchToNative, Script::Sha2Fast] {
        let (o, quits) = probe(script, PASSWORD, None).await;
        assert_eq!(o, ProbeOutcome::Up, "{script:?}");
        assert_eq!(quits, vec![true], "{script:?}: goodbye with COM_QUIT");
    }
    let (o, _) = probe(Script::Native, "wrong", None).await;
    assert!(down_with(&o, "error 1045: Access denied"), "{o:?}");
    let (o, _) = probe(Script::Busy, PASSWORD, None).await;
    assert!(down_with(&o, "error 1040: Too many connections"), "{o:?}");
    let (o, _) = probe(Script::Sha2Full, PASSWORD, None).await;
    assert!(down_with(&o, "full authentication"), "{o:?}");
}

#[tokio::test]
async fn mysql_queries() {
    let (o, quits) = probe(Script::QueryRows(2), PASSWORD, Some("SELECT 1")).await;
    assert_eq!(o, ProbeOutcome::Up);
    assert_eq!(quits, vec![true]);
    let (o, quits) = probe(Script::QueryRows(0), PASSWORD, Some("SELECT 1")).await;
    assert!(down_with(&o, "returned no rows"), "{o:?}");
    assert_eq!(quits, vec![true], "goodbye after a failed query too");
    let (o, _) = probe(Script::QueryError, PASSWORD, Some("SELECT 1")).await;
    assert!(down_with(&o, "error 1146"), "{o:?}");
}
