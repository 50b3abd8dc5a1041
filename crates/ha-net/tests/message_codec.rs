//! Round trip of every ha-core message through the full frame (encode, sign, parse, verify,
//! decode), and robustness of the decoder against arbitrary and mutated input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use ha_core::message::{
    Grant, GroupReport, GroupState, Heartbeat, Message, OperatorPref, PeerReport, TakeoverRequest,
    TakeoverResponse,
};
use ha_core::model::{AuthAlgorithm, AuthKey, AuthSpec};
use ha_core::{GroupId, NodeId};
use ha_net::auth::Keyring;
use ha_net::session;
use ha_net::wire::{Body, ClusterId, Header, WireMessage};
use proptest::prelude::*;

fn keyring() -> Keyring {
    Keyring::from_spec(&AuthSpec {
        active: Some(1),
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: b"k".to_vec(),
        }],
        insecure_no_auth: false,
    })
    .unwrap()
}

fn arb_state() -> impl Strategy<Value = GroupState> {
    prop_oneof![
        Just(GroupState::Stopped),
        Just(GroupState::Starting),
        Just(GroupState::Running),
        Just(GroupState::Stopping),
        Just(GroupState::Failed),
    ]
}

fn arb_group() -> impl Strategy<Value = GroupReport> {
    (
        "[a-z0-9_-]{1,24}",
        arb_state(),
        prop::option::of(any::<u64>()),
        prop::option::of((any::<u16>(), any::<u64>(), any::<u64>())),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(OperatorPref::None),
            Just(OperatorPref::Prefer),
            Just(OperatorPref::Avoid)
        ],
    )
        .prop_map(
            |(g, state, claim, grant, failcount, banned, fatal, operator)| GroupReport {
                group: GroupId(g),
                state,
                claim,
                grant: grant.map(|(n, i, c)| Grant {
                    node: NodeId(n),
                    incarnation: i,
                    claim: c,
                }),
                failcount,
                banned,
                fatal,
                operator,
            },
        )
}

fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(
            (any::<u16>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(n, incarnation, last_seq, alive)| PeerReport {
                    node: NodeId(n),
                    incarnation,
                    last_seq,
                    alive,
                },
            ),
            0..8,
        ),
        prop::collection::vec(arb_group(), 0..8),
    )
        .prop_map(
            |(incarnation, seq, view, ping_ok, standby, peers, groups)| Heartbeat {
                incarnation,
                seq,
                view,
                ping_ok,
                standby,
                peers,
                groups,
            },
        )
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_heartbeat().prop_map(Message::Heartbeat),
        ("\\PC{0,30}", any::<u64>(), any::<u64>()).prop_map(|(g, incarnation, claim)| {
            Message::TakeoverRequest(TakeoverRequest {
                group: GroupId(g),
                incarnation,
                claim,
            })
        }),
        (
            "\\PC{0,30}",
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(g, incarnation, claim, granted, grant_seq)| {
                Message::TakeoverResponse(TakeoverResponse {
                    group: GroupId(g),
                    incarnation,
                    claim,
                    granted,
                    grant_seq,
                })
            }),
    ]
}

fn header() -> Header {
    Header {
        kind: 0,
        cluster: ClusterId::from_name("c"),
        key_id: 0,
        link: ha_core::LinkId(0),
        sender: NodeId(1),
        dest: None,
        incarnation: 1,
        seq: 1,
        ctl_seq: 0,
    }
}

proptest! {
    #[test]
    fn every_message_round_trips(msg in arb_message()) {
        let kr = keyring();
        let f = session::seal(&kr, &header(), &Body::App(msg.clone())).unwrap();
        let (h, body) = session::open::<Message>(&kr, &f).unwrap();
        prop_assert_eq!(h.kind, WireMessage::kind(&msg));
        prop_assert_eq!(body, Body::App(msg));
    }

    #[test]
    fn mutated_payloads_never_panic(msg in arb_message(), pos in any::<prop::sample::Index>(), v in any::<u8>()) {
        let body = Body::App(msg.clone());
        let mut payload = body.encode().unwrap();
        if !payload.is_empty() {
            let i = pos.index(payload.len());
            payload[i] = v;
        }
        let _ = Body::<Message>::decode(WireMessage::kind(&msg), &payload);
        // Truncation is always detected.
        let full = body.encode().unwrap();
        if !full.is_empty() {
            let n = pos.index(full.len());
            prop_assert!(Body::<Message>::decode(WireMessage::kind(&msg), &full[..n]).is_err());
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(kind in any::<u8>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Body::<Message>::decode(kind, &bytes);
    }
}

#[test]
fn heartbeats_are_unreliable_requests_reliable() {
    let hb = Message::Heartbeat(Heartbeat {
        incarnation: 1,
        seq: 1,
        view: 1,
        ping_ok: true,
        standby: false,
        peers: vec![],
        groups: vec![],
    });
    assert!(!hb.reliable());
    let rq = Message::TakeoverRequest(TakeoverRequest {
        group: GroupId("g".into()),
        incarnation: 1,
        claim: 1,
    });
    assert!(rq.reliable());
}

#[test]
fn invalid_enum_and_flag_values_are_rejected() {
    let hb = Heartbeat {
        incarnation: 1,
        seq: 2,
        view: 3,
        ping_ok: true,
        standby: false,
        peers: vec![],
        groups: vec![GroupReport {
            group: GroupId("g".into()),
            state: GroupState::Running,
            claim: None,
            grant: None,
            failcount: 0,
            banned: false,
            fatal: false,
            operator: OperatorPref::Avoid,
        }],
    };
    let mut p = Body::App(Message::Heartbeat(hb)).encode().unwrap();
    // The group's flags byte is the last one: operator request 2 (avoid) in bits 2-3; 3 is
    // not a request, and bit 4 is no flag.
    let last = p.len() - 1;
    assert_eq!(p[last], 0b1000);
    for bad in [0b1100, 0b1_0000] {
        let mut q = p.clone();
        q[last] = bad;
        let e = Body::<Message>::decode(1, &q).unwrap_err();
        assert!(e.to_string().contains("group.flags"), "{e}");
    }
    // flags byte of the heartbeat is at offset 24.
    p[24] = 0x80;
    assert!(Body::<Message>::decode(1, &p).is_err());
    p[24] = 1;
    // group state byte: 24 flags, 25-26 peers count, 27-28 groups count, 29-30 len, 31 'g', 32 state
    p[32] = 9;
    let e = Body::<Message>::decode(1, &p).unwrap_err();
    assert!(e.to_string().contains("group.state"), "{e}");
}
