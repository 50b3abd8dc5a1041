//! Media: stream framing (proptest), a pseudo-terminal serial link, UDP unicast on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (common rules)

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ha_core::LinkId;
use ha_net::media::stream::{self, FdStream};
use ha_net::media::{Inbound, Media, UdpConfig, UdpMode};
use ha_net::wire::HEADER_LEN;
use proptest::prelude::*;
use tokio::sync::mpsc;

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), HEADER_LEN..300)
}

proptest! {
    /// Frames survive the stream encoding, split at arbitrary points, with line noise between
    /// them (noise without the sync pattern, which could legitimately swallow a frame).
    #[test]
    fn stream_framing_round_trip(
        frames in prop::collection::vec(frame_strategy(), 1..6),
        noise in prop::collection::vec(prop::collection::vec(0u8..0xA5, 0..10), 6),
        chunk in 1usize..50,
    ) {
        let mut wire = BytesMut::new();
        for (f, n) in frames.iter().zip(&noise) {
            wire.extend_from_slice(n);
            stream::encode(f, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for c in wire.chunks(chunk) {
            buf.extend_from_slice(c);
            while let Some(f) = stream::extract(&mut buf) {
                got.push(f.to_vec());
            }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn stream_extract_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while stream::extract(&mut buf).is_some() {}
        prop_assert!(buf.len() <= bytes.len());
    }
}

async fn recv(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("frame within 5 s")
        .expect("channel open")
}

fn test_frame(tag: u8) -> Bytes {
    let mut f = vec![tag; HEADER_LEN + 10];
    f[0] = b'H';
    Bytes::from(f)
}

#[tokio::test]
async fn serial_link_over_a_pty() {
    let pty = nix::pty::openpty(None, None).unwrap();
    stream::set_raw(&pty.master, None).unwrap();
    stream::set_raw(&pty.slave, None).unwrap();
    let (atx, mut arx) = mpsc::channel(16);
    let (btx, mut brx) = mpsc::channel(16);
    let mut a = Media::new();
    let mut b = Media::new();
    a.add_stream("serial", FdStream::new(pty.master).unwrap(), atx)
        .unwrap();
    b.add_stream("serial", FdStream::new(pty.slave).unwrap(), btx)
        .unwrap();
    for i in 0..5u8 {
        a.send(None, &test_frame(i));
        b.send(None, &test_frame(100 + i));
    }
    for i in 0..5u8 {
        let got = recv(&mut brx).await;
        assert_eq!(got.link, LinkId(0));
        assert_eq!(got.frame, test_frame(i));
        assert_eq!(recv(&mut arx).await.frame, test_frame(100 + i));
    }
}

#[tokio::test]
async fn udp_unicast_on_loopback_reports_the_link() {
    let iface = if testkit::is_root() { "lo" } else { "" };
    let (atx, _arx) = mpsc::channel(16);
    let (btx, mut brx) = mpsc::channel(16);
    // Find three distinct free ports (held together so they differ).
    let held: Vec<_> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    drop(held);
    let (pa, pb, pc) = (ports[0], ports[1], ports[2]);
    let cfg = |port: u16, peer: u16| UdpConfig {
        interface: iface.into(),
        port,
        bind: Some("127.0.0.1".parse().unwrap()),
        mode: UdpMode::Unicast {
            peers: vec![format!("127.0.0.1:{peer}").parse().unwrap()],
        },
    };
    let mut a = Media::new();
    a.add_udp("ucast", &cfg(pa, pb), atx).unwrap();
    let mut b = Media::new();
    // B's second link is the one A talks to: the reported link id must be 1.
    let (dtx, _drx) = mpsc::channel(16);
    b.add_udp("other", &cfg(pc, pa), dtx).unwrap();
    b.add_udp("ucast", &cfg(pb, pa), btx).unwrap();
    a.send(None, &test_frame(7));
    let got = recv(&mut brx).await;
    assert_eq!(got.link, LinkId(1));
    assert_eq!(got.frame, test_frame(7));
}

/// Multicast and broadcast between two namespaces, each medium bound to `eth0`; the receiver
/// learns which link a frame came on.
#[test]
fn multicast_and_broadcast_between_namespaces() {
    if !testkit::privileged("multicast_and_broadcast_between_namespaces") {
        return;
    }
    let topo = testkit::netns::Topology::builder()
        .hosts(2)
        .subnet_v4([10, 81, 0])
        .build()
        .unwrap();
    let mcast = UdpConfig {
        interface: "eth0".into(),
        port: 6940,
        bind: None,
        mode: UdpMode::Multicast {
            group: "239.0.0.94".parse().unwrap(),
            ttl: 1,
            r#loop: false,
        },
    };
    let mcast6 = UdpConfig {
        interface: "eth0".into(),
        port: 6942,
        bind: None,
        mode: UdpMode::Multicast {
            group: "ff02::694".parse().unwrap(),
            ttl: 1,
            r#loop: false,
        },
    };
    let bcast = UdpConfig {
        interface: "eth0".into(),
        port: 6941,
        bind: None,
        mode: UdpMode::Broadcast,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            topo.host(1).ns().run(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let (tx, mut rx) = mpsc::channel(16);
                    let mut m = Media::new();
                    m.add_udp("mcast", &mcast, tx.clone()).unwrap();
                    m.add_udp("bcast", &bcast, tx.clone()).unwrap();
                    m.add_udp("mcast6", &mcast6, tx).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut got = Vec::new();
                    while got.len() < 3 {
                        let f = recv(&mut rx).await;
                        if !got.contains(&f.link) {
                            assert_eq!(f.frame, test_frame(f.link.0));
                            got.push(f.link);
                        }
                    }
                    got.sort();
                    got
                })
            })
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        topo.host(0).ns().run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (tx, _rx) = mpsc::channel(16);
                let mut m = Media::new();
                m.add_udp("mcast", &mcast, tx.clone()).unwrap();
                m.add_udp("bcast", &bcast, tx.clone()).unwrap();
                m.add_udp("mcast6", &mcast6, tx).unwrap();
                // Repeat for a while: the receiver's group join may still be settling.
                for _ in 0..50 {
                    for l in 0..3u8 {
                        m.send(Some(LinkId(l)), &test_frame(l));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        });
        let got = receiver.join().unwrap();
        assert_eq!(got, vec![LinkId(0), LinkId(1), LinkId(2)]);
    });
}

/// A polled UDP medium: nothing is read until `poll_receive`, which then hands over every
/// waiting frame with its link id and a kernel arrival stamp from before the call.
#[tokio::test(flavor = "current_thread")]
async fn polled_udp_medium_drains_with_arrival_stamps() {
    let held: Vec<_> = (0..2)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    drop(held);
    let cfg = |port: u16, peer: u16| UdpConfig {
        interface: String::new(),
        port,
        bind: Some("127.0.0.1".parse().unwrap()),
        mode: UdpMode::Unicast {
            peers: vec![format!("127.0.0.1:{peer}").parse().unwrap()],
        },
    };
    let (atx, _arx) = mpsc::channel(16);
    let mut a = Media::new();
    a.add_udp("ucast", &cfg(ports[0], ports[1]), atx).unwrap();
    let mut b = Media::new();
    assert_eq!(
        b.add_udp_polled("ucast", &cfg(ports[1], ports[0])).unwrap(),
        LinkId(0)
    );
    assert!(b.has_polled() && !a.has_polled());
    let mut buf = ha_net::media::RecvBatch::default();
    assert_eq!(
        b.poll_receive(&mut buf, |_, _| panic!("nothing sent yet")),
        0
    );
    // The kernel turns receive stamping on from a work queue shortly after the option.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..3u8 {
        a.send(None, &test_frame(i));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before_drain = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut got = Vec::new();
    let n = b.poll_receive(&mut buf, |link, r| {
        assert_eq!(
            r.source,
            Some(format!("127.0.0.1:{}", ports[0]).parse().unwrap())
        );
        got.push((link, r.frame.to_vec(), r.stamp));
    });
    assert_eq!(n, 3);
    for (i, (link, frame, stamp)) in got.iter().enumerate() {
        assert_eq!(*link, LinkId(0));
        assert_eq!(frame[..], test_frame(i as u8)[..]);
        let stamp = stamp.expect("SO_TIMESTAMPNS stamp");
        // Stamped on arrival, i.e. at least ~50 ms before the drain (the sleep above).
        assert!(
            stamp + Duration::from_millis(40) <= before_drain,
            "{stamp:?} vs {before_drain:?}"
        );
    }
    assert_eq!(b.poll_receive(&mut buf, |_, _| panic!("drained")), 0);
}

/// "Port unreachable" for a unicast heartbeat wakes the error watch and is reported with its
/// destination; received frames do not wake the watch (polled media stay polled).
#[tokio::test(flavor = "current_thread")]
async fn port_unreachable_wakes_the_watch_and_names_the_destination() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut m = Media::new();
    m.add_udp_polled(
        "ucast",
        &UdpConfig {
            interface: String::new(),
            port,
            bind: Some("127.0.0.1".parse().unwrap()),
            mode: UdpMode::Unicast { peers: vec![dead] },
        },
    )
    .unwrap();
    let watch = m
        .unreachable_watch()
        .unwrap()
        .expect("unicast media are watched");
    // Traffic to the medium is not an error: the watch stays quiet.
    for i in 0..3u8 {
        sender.send_to(&test_frame(i), ("127.0.0.1", port)).unwrap();
    }
    let quiet = tokio::time::timeout(Duration::from_millis(100), watch.wait()).await;
    assert!(quiet.is_err(), "received frames woke the error watch");
    let mut buf = ha_net::media::RecvBatch::default();
    assert_eq!(m.poll_receive(&mut buf, |_, _| {}), 3);
    // A heartbeat to a port nobody listens on: the host answers "port unreachable".
    m.send(None, &test_frame(9));
    tokio::time::timeout(Duration::from_secs(2), watch.wait())
        .await
        .expect("the watch wakes on port unreachable")
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(m.poll_unreachable(|link, dest| got.push((link, dest))), 1);
    assert_eq!(got, vec![(LinkId(0), dead)]);
    assert_eq!(m.poll_unreachable(|_, _| panic!("drained")), 0);
}

/// Multicast and broadcast media draw no ICMP errors: no watch for them.
#[tokio::test(flavor = "current_thread")]
async fn only_unicast_media_are_watched_for_port_unreachable() {
    let mut m = Media::new();
    assert!(m.unreachable_watch().unwrap().is_none());
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    m.add_udp_polled(
        "bcast",
        &UdpConfig {
            interface: String::new(),
            port,
            bind: Some("127.0.0.1".parse().unwrap()),
            mode: UdpMode::Broadcast,
        },
    )
    .unwrap();
    assert!(m.unreachable_watch().unwrap().is_none());
}

/// The timerfd alarm fires at the set time (not before, and promptly), can be re-armed and
/// disarmed.
#[tokio::test(flavor = "current_thread")]
async fn alarm_fires_at_the_set_time() {
    let t0 = std::time::Instant::now();
    let mut alarm = ha_net::alarm::Alarm::new().unwrap();
    for ms in [5u64, 12, 20] {
        alarm.set(Some(Duration::from_millis(ms))).unwrap();
        alarm.wait().await;
        let el = t0.elapsed();
        assert!(
            el >= Duration::from_millis(ms),
            "fired early: {el:?} < {ms} ms"
        );
        assert!(el < Duration::from_millis(ms + 500), "fired late: {el:?}");
    }
    // A time in the past fires at once.
    alarm.set(Some(Duration::ZERO)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), alarm.wait())
        .await
        .expect("past deadline fires at once");
    // Disarmed: never.
    alarm.set(Some(Duration::from_millis(100))).unwrap();
    alarm.set(None).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), alarm.wait())
            .await
            .is_err()
    );
}
