//! The HTTP check's body digest (keepalived `digest`) against a server on loopback that sends
//! its response in pieces: a small body, a body far beyond what the check keeps for
//! matching, a header whose end straddles two writes, and a failing status; and sets of
//! accepted status codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{BodyMatch, CheckKind, CheckSpec, ProbeKey, ProbeOutcome, StatusCodes};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server answering every request with `pieces`, written one by one with a pause between.
async fn server(pieces: Vec<Vec<u8>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let pieces = pieces.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                for p in pieces {
                    if s.write_all(&p).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
    });
    addr
}

fn key(target: SocketAddr, substring: Option<&str>, md5: [u8; 16]) -> ProbeKey {
    ProbeKey {
        target,
        spec: CheckSpec {
            timeout: Duration::from_secs(2),
            ..CheckSpec::new(CheckKind::Http {
                path: "/".into(),
                host: None,
                expect_status: 200.into(),
                expect_body: substring.map(BodyMatch::from),
                expect_md5: Some(md5),
                tls: None,
            })
        },
    }
}

fn md5(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

#[tokio::test]
async fn http_digest_covers_the_whole_body() {
    let small = b"all systems ok\n".to_vec();
    let a = server(vec![b"HTTP/1.0 200 OK\r\n\r\n".to_vec(), small.clone()]).await;
    assert_eq!(
        run_probe(&key(a, None, md5(&small))).await,
        ProbeOutcome::Up
    );
    let o = run_probe(&key(a, None, md5(b"something else"))).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("has MD5") && r.contains("expected")),
        "{o:?}"
    );

    // 300 KiB in 100 KiB writes, the header's blank line split across the first two: all of
    // it is hashed, the substring is still found at the start.
    let big: Vec<u8> = (0..300 * 1024).map(|i| b"healthy "[i % 8]).collect();
    let mut pieces = vec![b"HTTP/1.0 200 OK\r\nX: y\r\n\r".to_vec()];
    let mut first = b"\n".to_vec();
    first.extend_from_slice(&big[..100 * 1024]);
    pieces.push(first);
    pieces.push(big[100 * 1024..200 * 1024].to_vec());
    pieces.push(big[200 * 1024..].to_vec());
    let b = server(pieces).await;
    assert_eq!(
        run_probe(&key(b, Some("healthy"), md5(&big))).await,
        ProbeOutcome::Up
    );
    // One byte short of the body's digest input: a mismatch.
    let o = run_probe(&key(b, None, md5(&big[..big.len() - 1]))).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("has MD5")),
        "{o:?}"
    );

    // The right body behind a failing status is down for the status.
    let c = server(vec![b"HTTP/1.0 503 Busy\r\n\r\n".to_vec(), small.clone()]).await;
    let o = run_probe(&key(c, None, md5(&small))).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("503")),
        "{o:?}"
    );
}

#[tokio::test]
async fn http_status_sets_accept_any_code_inside() {
    let no_content = server(vec![b"HTTP/1.0 204 No Content\r\n\r\n".to_vec()]).await;
    let moved = server(vec![b"HTTP/1.0 301 Moved\r\nLocation: /x\r\n\r\n".to_vec()]).await;
    let key = |target, codes: StatusCodes| ProbeKey {
        target,
        spec: CheckSpec::new(CheckKind::Http {
            path: "/".into(),
            host: None,
            expect_status: codes,
            expect_body: None,
            expect_md5: None,
            tls: None,
        }),
    };
    assert_eq!(
        run_probe(&key(no_content, StatusCodes::success())).await,
        ProbeOutcome::Up
    );
    let o = run_probe(&key(no_content, 200.into())).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("204") && r.contains("expected 200")),
        "{o:?}"
    );
    let o = run_probe(&key(moved, StatusCodes::success())).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("expected 200-299")),
        "{o:?}"
    );
    let with_301 = StatusCodes(vec![(200, 299), (301, 301)]);
    assert_eq!(run_probe(&key(moved, with_301)).await, ProbeOutcome::Up);
}

#[tokio::test]
async fn http_body_regex() {
    let a = server(vec![
        b"HTTP/1.0 200 OK\r\n\r\nstatus: yellow\nload 0.3\n".to_vec(),
    ])
    .await;
    let key = |m: BodyMatch| ProbeKey {
        target: a,
        spec: CheckSpec::new(CheckKind::Http {
            path: "/".into(),
            host: None,
            expect_status: 200.into(),
            expect_body: Some(m),
            expect_md5: None,
            tls: None,
        }),
    };
    let re = |p: &str| BodyMatch::regex(p).unwrap();
    assert_eq!(
        run_probe(&key(re("status: (green|yellow)"))).await,
        ProbeOutcome::Up
    );
    assert_eq!(
        run_probe(&key(re(r"load 0\.[0-4]"))).await,
        ProbeOutcome::Up
    );
    let o = run_probe(&key(re("status: (green|blue)"))).await;
    assert!(
        matches!(&o, ProbeOutcome::Down(r) if r.contains("lacks a match for /status: (green|blue)/")),
        "{o:?}"
    );
}
