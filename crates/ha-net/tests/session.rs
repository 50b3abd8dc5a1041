//! Wire format, authentication, replay protection and the reliable control stream, without
//! sockets: two sessions exchange frames through a lossy in-memory "network".

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use bytes::Bytes;
use ha_core::model::{AuthAlgorithm, AuthKey, AuthSpec};
use ha_core::{LinkId, NodeId, Timestamp};
use ha_net::auth::{Keyring, ReplayError, ReplayWindow};
use ha_net::session::{self, Dropped, Session, SessionConfig};
use ha_net::wire::codec::EncodeTooLong;
use ha_net::wire::{self, Body, ClusterId, DecodeError, Header, Reader, WireMessage, Writer};
use proptest::prelude::*;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum TestMsg {
    Beat { n: u64, names: Vec<String> },
    Ctl { id: u32, text: String },
}

impl WireMessage for TestMsg {
    fn kind(&self) -> u8 {
        match self {
            TestMsg::Beat { .. } => 1,
            TestMsg::Ctl { .. } => 2,
        }
    }
    fn reliable(&self) -> bool {
        matches!(self, TestMsg::Ctl { .. })
    }
    fn encode(&self, w: &mut Writer) -> Result<(), EncodeTooLong> {
        match self {
            TestMsg::Beat { n, names } => {
                w.u64(*n);
                w.count(names.len())?;
                for s in names {
                    w.str(s)?;
                }
            }
            TestMsg::Ctl { id, text } => {
                w.u32(*id);
                w.str(text)?;
            }
        }
        Ok(())
    }
    fn decode(kind: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match kind {
            1 => {
                let n = r.u64("n")?;
                let c = r.count("names", 2)?;
                let mut names = Vec::new();
                for _ in 0..c {
                    names.push(r.str("name")?);
                }
                Ok(TestMsg::Beat { n, names })
            }
            2 => Ok(TestMsg::Ctl {
                id: r.u32("id")?,
                text: r.str("text")?,
            }),
            k => Err(DecodeError::UnknownKind(k)),
        }
    }
}

fn spec(active: u8, keys: &[(u8, AuthAlgorithm, &str)]) -> AuthSpec {
    AuthSpec {
        active: Some(active),
        keys: keys
            .iter()
            .map(|(id, a, s)| AuthKey {
                id: *id,
                algorithm: *a,
                secret: s.as_bytes().to_vec(),
            })
            .collect(),
        insecure_no_auth: false,
    }
}

fn keyring() -> Keyring {
    Keyring::from_spec(&spec(1, &[(1, AuthAlgorithm::HmacSha256, "s3cret")])).unwrap()
}

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn cluster() -> ClusterId {
    ClusterId::from_name("test")
}

fn session(me: NodeId, inc: u64, kr: Keyring) -> Session<TestMsg> {
    let mut cfg = SessionConfig::new(cluster(), me, inc, vec![A, B]);
    cfg.resend_interval = Duration::from_millis(100);
    cfg.nack_interval = Duration::from_millis(10);
    cfg.max_resends = 5;
    Session::new(cfg, kr)
}

fn frames(s: &mut Session<TestMsg>) -> Vec<(LinkId, Bytes)> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn delivered(s: &mut Session<TestMsg>) -> Vec<TestMsg> {
    std::iter::from_fn(|| s.poll_delivered())
        .map(|d| d.message)
        .collect()
}

/// Move every queued frame from `from` to `to`, dropping those `lose` picks (by index).
fn pump(
    from: &mut Session<TestMsg>,
    to: &mut Session<TestMsg>,
    now: Timestamp,
    mut lose: impl FnMut(usize) -> bool,
) -> usize {
    let mut n = 0;
    for (i, (link, f)) in frames(from).into_iter().enumerate() {
        if !lose(i) {
            let _ = to.receive(now, link, &f);
            n += 1;
        }
    }
    n
}

fn beat(n: u64) -> TestMsg {
    TestMsg::Beat { n, names: vec![] }
}

fn ctl(id: u32) -> TestMsg {
    TestMsg::Ctl {
        id,
        text: format!("c{id}"),
    }
}

/// Exchange heartbeats so both sides know each other.
fn introduce(a: &mut Session<TestMsg>, b: &mut Session<TestMsg>, now: Timestamp) {
    a.send(now, None, None, beat(0)).unwrap();
    b.send(now, None, None, beat(0)).unwrap();
    pump(a, b, now, |_| false);
    pump(b, a, now, |_| false);
    delivered(a);
    delivered(b);
}

fn arb_msg() -> impl Strategy<Value = TestMsg> {
    prop_oneof![
        (any::<u64>(), prop::collection::vec(".{0,20}", 0..5))
            .prop_map(|(n, names)| TestMsg::Beat { n, names }),
        (any::<u32>(), ".{0,100}").prop_map(|(id, text)| TestMsg::Ctl { id, text }),
    ]
}

fn arb_body() -> impl Strategy<Value = Body<TestMsg>> {
    prop_oneof![
        arb_msg().prop_map(Body::App),
        any::<u64>().prop_map(|upto| Body::Ack { upto }),
        any::<u64>().prop_map(|upto| Body::Skip { upto }),
        prop::collection::vec(any::<u64>(), 0..=64).prop_map(|missing| Body::Nack { missing }),
    ]
}

fn arb_alg() -> impl Strategy<Value = AuthAlgorithm> {
    prop_oneof![
        Just(AuthAlgorithm::HmacSha256),
        Just(AuthAlgorithm::HmacSha1),
        Just(AuthAlgorithm::HmacMd5),
        Just(AuthAlgorithm::Crc),
    ]
}

fn header(sender: u16, dest: Option<u16>, inc: u64, seq: u64, ctl: u64) -> Header {
    Header {
        kind: 0,
        cluster: cluster(),
        key_id: 0,
        link: LinkId(0),
        sender: NodeId(sender),
        dest: dest.map(NodeId),
        incarnation: inc,
        seq,
        ctl_seq: ctl,
    }
}

proptest! {
    #[test]
    fn frame_round_trip(body in arb_body(), alg in arb_alg(), key_id in any::<u8>(),
                        sender in 0u16..0xFFFF, dest in prop::option::of(0u16..0xFFFF),
                        inc in any::<u64>(), seq in any::<u64>(), ctl in any::<u64>()) {
        let kr = Keyring::from_spec(&spec(key_id, &[(key_id, alg, "k")])).unwrap();
        let h = header(sender, dest, inc, seq, ctl);
        let f = session::seal(&kr, &h, &body).unwrap();
        let (h2, body2) = session::open::<TestMsg>(&kr, &f).unwrap();
        prop_assert_eq!(body2, body.clone());
        prop_assert_eq!(h2.sender, h.sender);
        prop_assert_eq!(h2.dest, h.dest);
        prop_assert_eq!((h2.incarnation, h2.seq, h2.ctl_seq), (inc, seq, ctl));
        prop_assert_eq!(h2.key_id, key_id);
        prop_assert_eq!(h2.kind, body.kind());
    }

    #[test]
    fn any_flipped_bit_is_refused(body in arb_body(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let kr = keyring();
        let f = session::seal(&kr, &header(1, None, 1, 1, 0), &body).unwrap();
        let mut g = f.to_vec();
        let i = pos.index(g.len());
        g[i] ^= 1 << bit;
        prop_assert!(session::open::<TestMsg>(&kr, &g).is_err());
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = wire::parse(&bytes);
        for kind in [1u8, 2, 0xF0, 0xF1, 0xF2, 0x7F] {
            let _ = Body::<TestMsg>::decode(kind, &bytes);
        }
        let _ = session::open::<TestMsg>(&keyring(), &bytes);
    }

    #[test]
    fn truncated_frames_are_malformed(body in arb_body(), cut in any::<prop::sample::Index>()) {
        let kr = keyring();
        let f = session::seal(&kr, &header(1, None, 1, 1, 0), &body).unwrap();
        let n = cut.index(f.len());
        prop_assert!(matches!(session::open::<TestMsg>(&kr, &f[..n]), Err(Dropped::Malformed(_))));
    }

    /// Control messages arrive exactly once and in order despite random loss.
    #[test]
    fn control_stream_survives_loss(loss in prop::collection::vec(any::<bool>(), 64), n in 1u32..12) {
        let mut a = session(A, 10, keyring());
        let mut b = session(B, 20, keyring());
        let mut now = Timestamp::from_millis(1);
        introduce(&mut a, &mut b, now);
        for id in 0..n {
            a.send(now, None, None, ctl(id)).unwrap();
        }
        let mut got = Vec::new();
        let mut k = 0usize;
        for round in 0..60u64 {
            let mut lose = |_: usize| { k += 1; loss[k % loss.len()] && round < 20 };
            pump(&mut a, &mut b, now, &mut lose);
            got.extend(delivered(&mut b));
            pump(&mut b, &mut a, now, &mut lose);
            now += Duration::from_millis(20);
            if round % 3 == 0 {
                a.send(now, None, None, beat(round)).unwrap();
            }
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
        got.retain(|m| matches!(m, TestMsg::Ctl { .. }));
        prop_assert_eq!(got, (0..n).map(ctl).collect::<Vec<_>>());
        prop_assert_eq!(a.pending_control(), 0);
    }
}

#[test]
fn replay_window() {
    let mut w = ReplayWindow::default();
    assert!(w.check(5, 10).unwrap());
    assert_eq!(w.check(5, 10), Err(ReplayError::Replay));
    assert!(!w.check(5, 8).unwrap());
    assert_eq!(w.check(5, 8), Err(ReplayError::Replay));
    assert!(!w.check(5, 200).unwrap());
    assert_eq!(w.check(5, 200 - 128), Err(ReplayError::TooOld));
    assert!(!w.check(5, 200 - 127).unwrap());
    assert_eq!(w.check(4, 1000), Err(ReplayError::StaleIncarnation));
    assert!(w.check(6, 1).unwrap());
    assert_eq!(w.check(6, 0), Err(ReplayError::TooOld));
}

#[test]
fn heartbeats_are_delivered_and_unreliable() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, beat(7)).unwrap();
    pump(&mut a, &mut b, now, |_| false);
    assert_eq!(delivered(&mut b), vec![beat(7)]);
    assert_eq!(a.pending_control(), 0);
    let c = b.counters();
    assert_eq!(c.frames_accepted, 2);
    assert_eq!(c.dropped(), 0);
}

#[test]
fn replayed_frames_are_dropped_and_counted() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, ctl(1)).unwrap();
    let f = frames(&mut a);
    assert_eq!(
        b.receive(now, LinkId(0), &f[0].1),
        Ok(A),
        "the sender, authenticated"
    );
    assert_eq!(delivered(&mut b), vec![ctl(1)]);
    assert_eq!(
        b.receive(now, LinkId(0), &f[0].1),
        Err(Dropped::Replay(ReplayError::Replay))
    );
    assert!(delivered(&mut b).is_empty());
    assert_eq!(b.counters().replayed, 1);
}

/// With two links every frame goes out twice, as distinct frames: each copy is accepted on
/// its own link (so both links count as alive), the message is delivered once, and a copy
/// replayed onto the other link is refused.
#[test]
fn redundant_links_carry_distinct_copies() {
    let mk = |me, inc| {
        let mut cfg = SessionConfig::new(cluster(), me, inc, vec![A, B]);
        cfg.links = 2;
        Session::<TestMsg>::new(cfg, keyring())
    };
    let (mut a, mut b) = (mk(A, 1), mk(B, 2));
    let now = Timestamp::from_millis(5);
    a.send(now, None, None, beat(1)).unwrap();
    a.send(now, None, None, ctl(7)).unwrap();
    let f = frames(&mut a);
    assert_eq!(
        f.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![LinkId(0), LinkId(1), LinkId(0), LinkId(1)]
    );
    for (l, fr) in &f {
        b.receive(now, *l, fr).unwrap();
    }
    let got: Vec<_> = std::iter::from_fn(|| b.poll_delivered())
        .map(|d| (d.link, d.message))
        .collect();
    // Heartbeats are delivered per link (liveness per link); the control message once.
    assert_eq!(
        got,
        vec![
            (LinkId(0), beat(1)),
            (LinkId(1), beat(1)),
            (LinkId(0), ctl(7))
        ]
    );
    assert_eq!(b.counters().duplicates, 1);
    assert_eq!(
        b.receive(now, LinkId(1), &f[0].1),
        Err(Dropped::WrongLink {
            sent: LinkId(0),
            received: LinkId(1)
        })
    );
    assert_eq!(b.counters().wrong_link, 1);
    // Sending on one link only.
    a.send(now, None, Some(LinkId(1)), beat(2)).unwrap();
    let f = frames(&mut a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, LinkId(1));
}

#[test]
fn restarted_peer_is_accepted_and_old_incarnation_refused() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, beat(1)).unwrap();
    let old = frames(&mut a);
    // A restarts with a higher incarnation.
    let mut a2 = session(A, 3, keyring());
    a2.send(now, None, None, beat(2)).unwrap();
    pump(&mut a2, &mut b, now, |_| false);
    assert_eq!(delivered(&mut b), vec![beat(2)]);
    assert_eq!(
        b.receive(now, LinkId(0), &old[0].1),
        Err(Dropped::Replay(ReplayError::StaleIncarnation))
    );
    assert_eq!(b.counters().stale_incarnation, 1);
}

#[test]
fn wrong_key_unknown_node_cluster_and_garbage_are_dropped() {
    let now = Timestamp::from_millis(5);
    let mut b = session(B, 2, keyring());
    // Same key id, different secret.
    let other = Keyring::from_spec(&spec(1, &[(1, AuthAlgorithm::HmacSha256, "guess")])).unwrap();
    let mut evil = session(A, 9, other);
    evil.send(now, None, None, ctl(1)).unwrap();
    pump(&mut evil, &mut b, now, |_| false);
    // Unknown key id.
    let k7 = Keyring::from_spec(&spec(7, &[(7, AuthAlgorithm::HmacSha256, "s3cret")])).unwrap();
    let mut evil7 = session(A, 9, k7);
    evil7.send(now, None, None, ctl(1)).unwrap();
    pump(&mut evil7, &mut b, now, |_| false);
    // Right key, node 3 not in the cluster.
    let mut stranger = Session::<TestMsg>::new(
        SessionConfig::new(cluster(), NodeId(3), 1, vec![A, B, NodeId(3)]),
        keyring(),
    );
    stranger.send(now, None, None, ctl(1)).unwrap();
    pump(&mut stranger, &mut b, now, |_| false);
    // Right key, other cluster.
    let mut foreign = Session::<TestMsg>::new(
        SessionConfig::new(ClusterId::from_name("other"), A, 1, vec![A, B]),
        keyring(),
    );
    foreign.send(now, None, None, ctl(1)).unwrap();
    pump(&mut foreign, &mut b, now, |_| false);
    // Garbage and an unsigned frame.
    let _ = b.receive(now, LinkId(0), b"HA\x01garbage");
    let none = Keyring::from_spec(&AuthSpec {
        active: None,
        keys: vec![],
        insecure_no_auth: true,
    })
    .unwrap();
    let mut unsigned = session(A, 9, none);
    unsigned.send(now, None, None, ctl(1)).unwrap();
    pump(&mut unsigned, &mut b, now, |_| false);

    assert!(delivered(&mut b).is_empty());
    assert!(frames(&mut b).is_empty(), "nothing answered (no ack)");
    let c = b.counters();
    assert_eq!(
        (
            c.bad_mac,
            c.unknown_key,
            c.unknown_node,
            c.wrong_cluster,
            c.malformed,
            c.unauthenticated
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(c.frames_accepted, 0);
    assert_eq!(c.dropped(), 6);
}

#[test]
fn key_rotation_accepts_every_known_key() {
    let now = Timestamp::from_millis(5);
    let keys = [
        (1, AuthAlgorithm::HmacSha1, "old-key"),
        (2, AuthAlgorithm::HmacSha256, "new-key"),
    ];
    let mut a = session(A, 1, Keyring::from_spec(&spec(2, &keys)).unwrap());
    let mut b = session(B, 2, Keyring::from_spec(&spec(1, &keys)).unwrap());
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, beat(1)).unwrap();
    b.send(now, None, None, beat(2)).unwrap();
    pump(&mut a, &mut b, now, |_| false);
    pump(&mut b, &mut a, now, |_| false);
    assert_eq!(delivered(&mut b), vec![beat(1)]);
    assert_eq!(delivered(&mut a), vec![beat(2)]);
    // A node that dropped the old key refuses frames signed with it.
    let mut c = session(A, 5, Keyring::from_spec(&spec(2, &keys[1..])).unwrap());
    b.send(now, None, None, beat(3)).unwrap();
    pump(&mut b, &mut c, now, |_| false);
    assert!(delivered(&mut c).is_empty());
    assert_eq!(c.counters().unknown_key, 1);
}

#[test]
fn running_without_keys_needs_opt_in() {
    let err = Keyring::from_spec(&AuthSpec::default()).unwrap_err();
    assert!(err.to_string().contains("insecure_no_auth"), "{err}");
    assert!(Keyring::from_spec(&spec(3, &[(1, AuthAlgorithm::HmacSha256, "x")])).is_err());
    assert!(Keyring::from_spec(&spec(1, &[(1, AuthAlgorithm::HmacSha256, "")])).is_err());
    // Unsigned frames are refused by a node that has keys.
    let kr = keyring();
    let none = Keyring::from_spec(&AuthSpec {
        active: None,
        keys: vec![],
        insecure_no_auth: true,
    })
    .unwrap();
    let f = session::seal(&none, &header(1, None, 1, 1, 0), &Body::App(beat(1))).unwrap();
    assert!(session::open::<TestMsg>(&none, &f).is_ok());
    assert!(matches!(
        session::open::<TestMsg>(&kr, &f),
        Err(Dropped::Auth(ha_net::auth::AuthError::Unauthenticated))
    ));
}

#[test]
fn lost_last_control_message_is_recovered_via_heartbeat_nack() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let mut now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, ctl(1)).unwrap();
    pump(&mut a, &mut b, now, |_| true); // lost
    now += Duration::from_millis(10);
    a.send(now, None, None, beat(1)).unwrap(); // carries ctl position 1
    pump(&mut a, &mut b, now, |_| false);
    assert_eq!(delivered(&mut b), vec![beat(1)]);
    assert_eq!(b.counters().nacks_sent, 1);
    pump(&mut b, &mut a, now, |_| false); // NACK reaches A, which retransmits at once
    assert_eq!(a.counters().retransmits, 1);
    pump(&mut a, &mut b, now, |_| false);
    assert_eq!(delivered(&mut b), vec![ctl(1)]);
    pump(&mut b, &mut a, now, |_| false); // ack
    assert_eq!(a.pending_control(), 0);
}

#[test]
fn unacknowledged_control_is_given_up_after_max_resends() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let mut now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, None, None, ctl(1)).unwrap();
    for _ in 0..10 {
        now += Duration::from_millis(100);
        a.handle_timeout(now);
    }
    assert_eq!(a.pending_control(), 0);
    assert_eq!(a.counters().retransmits, 5);
    assert_eq!(a.counters().control_lost, 1);
    // B, which lost everything, asks later and is told to skip.
    frames(&mut a);
    a.send(now, None, None, beat(1)).unwrap();
    pump(&mut a, &mut b, now, |_| false);
    pump(&mut b, &mut a, now, |_| false);
    pump(&mut a, &mut b, now, |_| false);
    assert_eq!(b.counters().control_lost, 1);
    assert_eq!(b.poll_timeout(), None, "no gap left open");
}

#[test]
fn addressed_messages_reach_only_their_addressee() {
    let mut a = session(A, 1, keyring());
    let mut b = session(B, 2, keyring());
    let now = Timestamp::from_millis(5);
    introduce(&mut a, &mut b, now);
    a.send(now, Some(NodeId(3)), None, ctl(1)).unwrap();
    a.send(now, Some(B), None, ctl(2)).unwrap();
    pump(&mut a, &mut b, now, |_| false);
    assert_eq!(delivered(&mut b), vec![ctl(2)]);
}
