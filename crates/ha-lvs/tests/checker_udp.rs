//! UDP checks (keepalived UDP_CHECK) against in-process UDP servers on loopback (no root
//! needed): one that answers, one that reads and stays silent, and a closed port, whose ICMP
//! port unreachable the kernel reports on the checker's connected socket. Then the checker
//! driving a UDP service: the closed port is quiesced, and restored once a server binds it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_lvs::checker::driver::{Checker, MemoryTable};
use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::udp::{HexPattern, UdpCheck, UdpReply};
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use ha_lvs::model::*;
use tokio::net::UdpSocket;

/// A server on `lo` that answers every datagram with "pong " + the datagram (or stays silent),
/// keeping what it received.
async fn server(lo: &str, answer: bool) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let sock = UdpSocket::bind(format!("{lo}:0")).await.unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            log.lock().unwrap().push(buf[..n].to_vec());
            if answer {
                let reply = [b"pong ".as_slice(), &buf[..n]].concat();
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    (addr, seen)
}

/// A port nothing listens on (bound, then closed).
async fn closed_port(lo: &str) -> SocketAddr {
    let s = UdpSocket::bind(format!("{lo}:0")).await.unwrap();
    s.local_addr().unwrap()
}

fn key(target: SocketAddr, check: UdpCheck) -> ProbeKey {
    ProbeKey {
        target,
        spec: CheckSpec {
            timeout: Duration::from_millis(300),
            ..CheckSpec::new(CheckKind::Udp(check))
        },
    }
}

fn reply(expect: &str) -> Option<UdpReply> {
    Some(UdpReply {
        expect: HexPattern::parse(expect, true).unwrap(),
        ..UdpReply::default()
    })
}

fn down_with(o: &ProbeOutcome, needle: &str) -> bool {
    matches!(o, ProbeOutcome::Down(r) if r.contains(needle))
}

#[tokio::test]
async fn udp_check_follows_replies_silence_and_port_unreachable() {
    for lo in ["127.0.0.1", "[::1]"] {
        let (echo, seen) = server(lo, true).await;
        let (silent, _) = server(lo, false).await;
        let closed = closed_port(lo).await;
        let payload = b"hello".to_vec();
        let with = |r| UdpCheck {
            payload: payload.clone(),
            reply: r,
        };
        // "po" then any byte: matches "pong hello".
        let o = run_probe(&key(echo, with(reply("70 6f xx")))).await;
        assert_eq!(o, ProbeOutcome::Up, "{lo}");
        assert_eq!(seen.lock().unwrap().last().unwrap(), &payload);
        let o = run_probe(&key(echo, with(reply("70 6f 6e 68")))).await;
        assert!(down_with(&o, "byte 3 is 67, expected 68"), "{lo}: {o:?}");
        let long = UdpReply {
            max_len: 4,
            ..UdpReply::default()
        };
        let o = run_probe(&key(echo, with(Some(long)))).await;
        assert!(down_with(&o, "reply of 10 bytes"), "{lo}: {o:?}");
        // Any reply is up when none is required.
        assert_eq!(
            run_probe(&key(echo, with(None))).await,
            ProbeOutcome::Up,
            "{lo}"
        );
        // Silence: up unless a reply is required.
        let t0 = Instant::now();
        assert_eq!(
            run_probe(&key(silent, with(None))).await,
            ProbeOutcome::Up,
            "{lo}"
        );
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let o = run_probe(&key(silent, with(reply("70")))).await;
        assert!(down_with(&o, "no UDP reply"), "{lo}: {o:?}");
        // A closed port: the kernel's port unreachable is down, whatever the reply setting,
        // and well before the timeout.
        for r in [None, reply("70")] {
            let t0 = Instant::now();
            let o = run_probe(&key(
                closed,
                UdpCheck {
                    payload: Vec::new(),
                    reply: r,
                },
            ))
            .await;
            assert!(down_with(&o, "port unreachable"), "{lo}: {o:?}");
            assert!(t0.elapsed() < Duration::from_millis(250), "{lo}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_quiesces_a_closed_udp_port_and_restores_it() {
    let (open, _) = server("127.0.0.1", false).await;
    let closed = closed_port("127.0.0.1").await;
    let svc = ServiceKey::Addr {
        protocol: Protocol::Udp,
        addr: "10.9.0.1:53".parse().unwrap(),
    };
    let check = CheckSpec {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(100),
        ..CheckSpec::new(CheckKind::Udp(UdpCheck::default()))
    };
    let mem = MemoryTable::default();
    let checker = Checker::spawn(
        common::one_service(svc, &[open, closed], check),
        mem.clone(),
    )
    .unwrap();
    common::wait_weights(&mem, svc, &[(open, 1), (closed, 0)]).await;
    // A server binds the closed port: no more ICMP errors, weight back.
    let _revived = UdpSocket::bind(closed).await.unwrap();
    common::wait_weights(&mem, svc, &[(closed, 1)]).await;
    checker.stop().await.unwrap();
}
