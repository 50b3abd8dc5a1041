//! The exit watch on loopback: a watcher learns of the watched daemon's exit with its node id
//! and incarnation, and refuses a hello it cannot verify. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use std::net::SocketAddr;
use std::time::Duration;

use ha_core::model::{AuthAlgorithm, AuthKey, AuthSpec};
use ha_core::{LinkId, NodeId};
use ha_net::auth::Keyring;
use ha_net::exit_watch::{ExitWatch, Identity, PeerExit, WatchLink};
use tokio::sync::mpsc;

fn keyring(secret: &[u8]) -> Keyring {
    Keyring::from_spec(&AuthSpec {
        active: Some(1),
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: secret.to_vec(),
        }],
        insecure_no_auth: false,
    })
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Node `me` on 127.0.0.`me`, watching the other of nodes 1 and 2.
fn start(
    me: u16,
    incarnation: u64,
    port: u16,
    secret: &[u8],
) -> (ExitWatch, mpsc::Receiver<PeerExit>) {
    let other = 3 - me;
    let link = WatchLink {
        link: LinkId(0),
        interface: String::new(),
        local: format!("127.0.0.{me}:{port}").parse().unwrap(),
        peers: vec![
            format!("127.0.0.{other}:{port}")
                .parse::<SocketAddr>()
                .unwrap(),
        ],
    };
    let (tx, rx) = mpsc::channel(4);
    let id = Identity {
        me: NodeId(me),
        incarnation,
        nodes: vec![NodeId(1), NodeId(2)],
        keyring: keyring(secret),
    };
    (ExitWatch::start(&[link], id, tx), rx)
}

#[tokio::test(flavor = "current_thread")]
async fn a_watcher_learns_of_the_exit_and_watches_the_next_instance() {
    let port = free_port();
    let (_b, mut exits_b) = start(2, 20, port, b"exit-watch-test");
    let (a, _exits_a) = start(1, 10, port, b"exit-watch-test");
    // B connects within its retry pause and checks A's hello; then A exits.
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(a);
    let exit = tokio::time::timeout(Duration::from_secs(3), exits_b.recv())
        .await
        .expect("B learns of A's exit")
        .unwrap();
    assert_eq!(
        exit,
        PeerExit {
            link: LinkId(0),
            node: NodeId(1),
            incarnation: 10
        }
    );
    // A restarts as a new instance: B watches it too.
    let (a2, _exits_a2) = start(1, 11, port, b"exit-watch-test");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(a2);
    let exit = tokio::time::timeout(Duration::from_secs(3), exits_b.recv())
        .await
        .expect("B learns of the second exit")
        .unwrap();
    assert_eq!(exit.incarnation, 11);
}

#[tokio::test(flavor = "current_thread")]
async fn a_hello_signed_with_another_key_is_not_trusted() {
    let port = free_port();
    let (_b, mut exits_b) = start(2, 20, port, b"the right key");
    let (a, _exits_a) = start(1, 10, port, b"another key");
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(a);
    let got = tokio::time::timeout(Duration::from_millis(1500), exits_b.recv()).await;
    assert!(
        got.is_err(),
        "an unverified peer's exit was reported: {got:?}"
    );
}
