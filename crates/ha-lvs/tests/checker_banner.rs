//! Banner / line checks against small tokio servers on 127.0.0.1 (no root needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a test server behaves on each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Send this greeting at once, then wait for the client to go.
    Greet(&'static str),
    /// Wait for a line, then answer it with this text.
    Answer(&'static str),
    /// Accept and say nothing.
    Silent,
}

/// What the server read from each client, and whether the client reset the connection.
#[derive(Default)]
struct Seen {
    received: Vec<String>,
    resets: usize,
}

async fn server(b: Behaviour) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, b, seen2.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut s: TcpStream, b: Behaviour, seen: Arc<Mutex<Seen>>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    match b {
        Behaviour::Greet(text) => {
            let _ = s.write_all(text.as_bytes()).await;
        }
        Behaviour::Answer(text) => {
            while !got.contains(&b'\n') {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(text.as_bytes()).await;
        }
        Behaviour::Silent => {}
    }
    // Read until the client goes away, noting how.
    let reset = loop {
        match s.read(&mut buf).await {
            Ok(0) => break false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    let mut g = seen.lock().unwrap();
    g.received.push(String::from_utf8_lossy(&got).into_owned());
    g.resets += usize::from(reset);
}

fn key(target: SocketAddr, send: Option<&str>, expect: &str, timeout_ms: u64) -> ProbeKey {
    let mut spec = CheckSpec::new(CheckKind::Banner {
        send: send.map(str::to_string),
        expect: expect.into(),
        tls: None,
    });
    spec.timeout = Duration::from_millis(timeout_ms);
    ProbeKey { target, spec }
}

fn down_reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Down(r) => r,
        other => panic!("expected down, got {other:?}"),
    }
}

/// Wait until the server has recorded `n` finished connections.
async fn finished(seen: &Arc<Mutex<Seen>>, n: usize) {
    for _ in 0..200 {
        if seen.lock().unwrap().received.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "server saw {} connections end, wanted {n}",
        seen.lock().unwrap().received.len()
    );
}

#[tokio::test]
async fn smtp_like_greeting_is_up_and_closed_with_rst() {
    let (addr, seen) = server(Behaviour::Greet("220 mail.example.test ESMTP ready\r\n")).await;
    assert_eq!(
        run_probe(&key(addr, None, "220", 2000)).await,
        ProbeOutcome::Up
    );
    finished(&seen, 1).await;
    let g = seen.lock().unwrap();
    assert_eq!(
        g.received,
        vec![String::new()],
        "nothing sent without a request"
    );
    assert_eq!(g.resets, 1, "the check must close with an RST");
}

#[tokio::test]
async fn request_then_answer() {
    let (addr, seen) = server(Behaviour::Answer("+PONG\r\n")).await;
    assert_eq!(
        run_probe(&key(addr, Some("PING\r\n"), "PONG", 2000)).await,
        ProbeOutcome::Up
    );
    finished(&seen, 1).await;
    assert_eq!(seen.lock().unwrap().received, vec!["PING\r\n".to_string()]);
    // The same server without the request never answers: down on timeout.
    let r = down_reason(run_probe(&key(addr, None, "PONG", 300)).await);
    assert!(r.contains("no answer within 300 ms"), "{r}");
}

#[tokio::test]
async fn wrong_banner_is_down_with_what_was_received() {
    let (addr, _) = server(Behaviour::Answer("-ERR unknown command\r\n")).await;
    // The server answers and then waits: the check reads until its timeout...
    let r = down_reason(run_probe(&key(addr, Some("PING\n"), "PONG", 300)).await);
    assert!(r.contains("no answer within"), "{r}");

    // ...while a server that closes after the wrong greeting is down at once, with context.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closer = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"554 no service here\r\n").await;
        }
    });
    let r = down_reason(run_probe(&key(closer, None, "220", 2000)).await);
    assert!(r.contains(&closer.to_string()), "{r}");
    assert!(
        r.contains("closed the connection") && r.contains("554 no service here"),
        "{r}"
    );
    assert!(r.contains("\"220\""), "{r}");
}

#[tokio::test]
async fn silent_server_times_out_and_closed_port_is_down() {
    let (addr, _) = server(Behaviour::Silent).await;
    let r = down_reason(run_probe(&key(addr, None, "220", 300)).await);
    assert!(r.contains("no answer within 300 ms"), "{r}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = down_reason(run_probe(&key(closed, None, "220", 2000)).await);
    assert!(r.contains(&format!("connect {closed}")), "{r}");
}

#[tokio::test]
async fn greeting_split_over_several_writes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                for part in ["* ", "O", "K IMAP4rev1 ready\r\n"] {
                    let _ = s.write_all(part.as_bytes()).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut b = [0u8; 16];
                let _ = s.read(&mut b).await;
            });
        }
    });
    assert_eq!(
        run_probe(&key(addr, None, "* OK", 2000)).await,
        ProbeOutcome::Up
    );
}
