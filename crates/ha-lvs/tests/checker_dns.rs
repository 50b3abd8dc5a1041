//! DNS checks against a tiny in-process DNS responder on loopback (no root needed). The
//! responder is switched between answering correctly, SERVFAIL, NXDOMAIN, a wrong id, an
//! answer from another port, an answer to another question, a truncated answer (served in
//! full over TCP on the same port) and silence; the check must follow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_lvs::checker::dns::{self, DnsType, Header, Message, Question, RData, Record};
use ha_lvs::checker::probe::run_probe;
use ha_lvs::checker::{CheckKind, CheckSpec, ProbeKey, ProbeOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Correct,
    ServFail,
    NxDomain,
    WrongId,
    WrongIdThenCorrect,
    OtherSource,
    OtherQuestion,
    Truncated,
    Silent,
}

struct Responder {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Header and question of every query received over UDP.
    queries: Arc<Mutex<Vec<(Header, Question)>>>,
    tcp_queries: Arc<AtomicUsize>,
}

impl Responder {
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

const V4_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const V6_ANSWER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53);

/// The answer to `query` (rcode, optionally another id / question, TC without records).
fn answer(query: &Message, rcode: u16, id_xor: u16, other_q: bool, tc: bool) -> Vec<u8> {
    let mut q = query.questions[0].clone();
    let data = match q.qtype {
        DnsType::A => Some(RData::A(V4_ANSWER)),
        DnsType::Aaaa => Some(RData::Aaaa(V6_ANSWER)),
        DnsType::Txt => Some(RData::Txt(vec![b"v=ok ".to_vec(), b"healthy".to_vec()])),
        _ => None,
    };
    let answers = match data {
        Some(data) if rcode == 0 && !tc => vec![
            Record {
                name: q.name.clone(),
                class: 1,
                ttl: 60,
                data: RData::Name(DnsType::Cname, format!("real.{}", q.name)),
            },
            Record {
                name: format!("real.{}", q.name),
                class: 1,
                ttl: 60,
                data,
            },
        ],
        _ => Vec::new(),
    };
    if other_q {
        q.name = "other.example".into();
    }
    let flags = 0x8000 | 0x0100 | 0x0080 | if tc { 0x0200 } else { 0 } | rcode;
    dns::encode(&Message {
        header: Header {
            id: query.header.id ^ id_xor,
            flags,
            qdcount: 1,
            ancount: answers.len() as u16,
            nscount: 0,
            arcount: 0,
        },
        questions: vec![q],
        answers,
    })
    .unwrap()
}

/// A responder on `ip` with UDP and TCP on the same port.
async fn responder(ip: &str) -> Option<Responder> {
    let (udp, tcp) = 'found: {
        for _ in 0..50 {
            let udp = UdpSocket::bind((ip, 0)).await.ok()?;
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break 'found (udp, tcp);
            }
        }
        panic!("no port free for both UDP and TCP on {ip}");
    };
    let addr = udp.local_addr().unwrap();
    let r = Responder {
        addr,
        mode: Arc::new(Mutex::new(Mode::Correct)),
        queries: Arc::default(),
        tcp_queries: Arc::default(),
    };
    let (mode, queries) = (r.mode.clone(), r.queries.clone());
    let other = UdpSocket::bind((ip, 0)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let Ok(query) = dns::decode(&buf[..n]) else {
                continue;
            };
            queries
                .lock()
                .unwrap()
                .push((query.header, query.questions[0].clone()));
            let m = *mode.lock().unwrap();
            let out: Vec<Vec<u8>> = match m {
                Mode::Correct => vec![answer(&query, 0, 0, false, false)],
                Mode::ServFail => vec![answer(&query, 2, 0, false, false)],
                Mode::NxDomain => vec![answer(&query, 3, 0, false, false)],
                Mode::WrongId => vec![answer(&query, 0, 0x5a5a, false, false)],
                Mode::WrongIdThenCorrect => vec![
                    answer(&query, 0, 0x5a5a, false, false),
                    answer(&query, 0, 0, false, false),
                ],
                Mode::OtherQuestion => vec![answer(&query, 0, 0, true, false)],
                Mode::Truncated => vec![answer(&query, 0, 0, false, true)],
                Mode::OtherSource => {
                    // The right answer, from the wrong port.
                    let _ = other
                        .send_to(&answer(&query, 0, 0, false, false), from)
                        .await;
                    vec![]
                }
                Mode::Silent => vec![],
            };
            for b in out {
                let _ = udp.send_to(&b, from).await;
            }
        }
    });
    let tcp_count = r.tcp_queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let count = tcp_count.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Ok(query) = dns::decode(&msg) else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let a = answer(&query, 0, 0, false, false);
                let mut out = (a.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&a);
                let _ = s.write_all(&out).await;
                // Wait for the client to go (it resets).
                let _ = s.read(&mut len).await;
            });
        }
    });
    Some(r)
}

fn key(target: SocketAddr, qtype: DnsType, expect: Option<&str>, tcp: bool) -> ProbeKey {
    let mut spec = CheckSpec::new(CheckKind::Dns {
        name: "www.example.test".into(),
        qtype,
        expect: expect.map(str::to_string),
        tcp,
    });
    spec.timeout = Duration::from_millis(400);
    ProbeKey { target, spec }
}

fn down_reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Down(r) => r,
        other => panic!("expected down, got {other:?}"),
    }
}

#[tokio::test]
async fn check_follows_the_server_up_and_down() {
    let r = responder("127.0.0.1").await.unwrap();
    let k = key(r.addr, DnsType::A, None, false);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);

    r.set(Mode::ServFail);
    let why = down_reason(run_probe(&k).await);
    assert!(
        why.contains("SERVFAIL") && why.contains(&r.addr.to_string()),
        "{why}"
    );

    r.set(Mode::WrongId);
    let why = down_reason(run_probe(&k).await);
    assert!(
        why.contains("no DNS answer") && why.contains("ignored: answer with id"),
        "{why}"
    );

    r.set(Mode::Silent);
    let started = Instant::now();
    let why = down_reason(run_probe(&k).await);
    assert!(
        why.contains("no DNS answer from") && why.contains("400 ms"),
        "{why}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    // keepalived: every RCODE but NOERROR is down, NXDOMAIN included.
    r.set(Mode::NxDomain);
    let why = down_reason(run_probe(&k).await);
    assert!(why.contains("NXDOMAIN"), "{why}");

    r.set(Mode::Correct);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);

    // What was sent: RD set, one question of ours, fresh random ids.
    let q = r.queries.lock().unwrap();
    assert_eq!(q.len(), 6);
    for (h, question) in q.iter() {
        assert_eq!(h.flags, 0x0100, "a standard query with RD only");
        assert_eq!(h.qdcount, 1);
        assert_eq!(question.name, "www.example.test");
        assert_eq!(question.qtype, DnsType::A);
        assert_eq!(question.class, 1);
    }
    let first = q[0].0.id;
    assert!(q.iter().any(|(h, _)| h.id != first), "ids must vary");
}

#[tokio::test]
async fn expected_text_must_be_in_an_answer() {
    let r = responder("127.0.0.1").await.unwrap();
    let up = |qtype, expect: &'static str| {
        let k = key(r.addr, qtype, Some(expect), false);
        async move { run_probe(&k).await }
    };
    assert_eq!(up(DnsType::A, "192.0.2.53").await, ProbeOutcome::Up);
    // The CNAME target counts too, case-insensitively.
    assert_eq!(
        up(DnsType::A, "REAL.www.example.test.").await,
        ProbeOutcome::Up
    );
    assert_eq!(up(DnsType::Txt, "healthy").await, ProbeOutcome::Up);
    let why = down_reason(up(DnsType::A, "192.0.2.99").await);
    assert!(
        why.contains("no answer contains \"192.0.2.99\"") && why.contains("192.0.2.53"),
        "{why}"
    );
    // NOERROR without records: up without expect, down with it.
    assert_eq!(
        run_probe(&key(r.addr, DnsType::Mx, None, false)).await,
        ProbeOutcome::Up
    );
    let why = down_reason(up(DnsType::Mx, "mail").await);
    assert!(why.contains("no answer records"), "{why}");
}

#[tokio::test]
async fn datagrams_that_are_not_the_answer_are_ignored() {
    let r = responder("127.0.0.1").await.unwrap();
    let k = key(r.addr, DnsType::A, Some("192.0.2.53"), false);
    // A wrong id first, then the answer: the wrong one is skipped.
    r.set(Mode::WrongIdThenCorrect);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    // The right answer from another port never reaches the check.
    r.set(Mode::OtherSource);
    let why = down_reason(run_probe(&k).await);
    assert!(why.contains("no DNS answer"), "{why}");
    // An answer to another question is not ours.
    r.set(Mode::OtherQuestion);
    let why = down_reason(run_probe(&k).await);
    assert!(why.contains("another question"), "{why}");
}

#[tokio::test]
async fn truncated_answers_are_asked_again_over_tcp() {
    let r = responder("127.0.0.1").await.unwrap();
    r.set(Mode::Truncated);
    let k = key(r.addr, DnsType::A, Some("192.0.2.53"), false);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    assert_eq!(r.queries.lock().unwrap().len(), 1);
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 1);
    // TCP only: no UDP query at all.
    r.set(Mode::Silent);
    let k = key(r.addr, DnsType::A, Some("192.0.2.53"), true);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    assert_eq!(r.queries.lock().unwrap().len(), 1);
    assert_eq!(r.tcp_queries.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn closed_port_is_down_at_once() {
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let mut k = key(closed, DnsType::A, None, false);
    k.spec.timeout = Duration::from_secs(3);
    let started = Instant::now();
    let why = down_reason(run_probe(&k).await);
    assert!(
        why.contains(&closed.to_string()) && why.contains("refused"),
        "{why}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ICMP port unreachable ends the probe"
    );
    // Over TCP the same.
    let why = down_reason(run_probe(&key(closed, DnsType::A, None, true)).await);
    assert!(why.contains("refused"), "{why}");
}

#[tokio::test]
async fn ipv6_endpoint() {
    let Some(r) = responder("::1").await else {
        // CI (HA_TOOLKIT_REQUIRE_PRIVILEGED) turns this skip into a failure.
        testkit::skip_or_fail("ipv6_endpoint", "no IPv6 loopback");
        return;
    };
    let k = key(r.addr, DnsType::Aaaa, Some("2001:db8::53"), false);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
    r.set(Mode::ServFail);
    assert!(down_reason(run_probe(&k).await).contains("SERVFAIL"));
    r.set(Mode::Truncated);
    assert_eq!(run_probe(&k).await, ProbeOutcome::Up);
}
