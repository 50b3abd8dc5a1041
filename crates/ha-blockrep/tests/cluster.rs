//! Cluster integration: the drbddisk resource, fencing, keep-alive timeout, config import.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ha_blockrep::config::DrbdConf;
use ha_blockrep::engine::Fencing;
use ha_blockrep::state::{ConnState, DiskState, Role};
use ha_core::model::{AgentSpec, ResourceSpec};
use ha_core::outcome::OcfCode;
use ha_core::resource::ResourceRegistry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn spec(res: &str) -> ResourceSpec {
    ResourceSpec {
        id: format!("drbddisk-{res}").into(),
        agent: AgentSpec::Builtin {
            kind: "drbddisk".into(),
        },
        params: [("resource".to_string(), res.to_string())]
            .into_iter()
            .collect(),
        start_timeout: Duration::from_secs(5),
        stop_timeout: Duration::from_secs(5),
        monitor_interval: None,
        monitor_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drbddisk_resource_promotes_and_demotes() {
    let (a, _) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, _) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    a.demote().await.unwrap();
    b.wait_for("peer demoted", Duration::from_secs(5), |s| {
        s.peer_role == Role::Secondary
    })
    .await
    .unwrap();
    let mut reg = ResourceRegistry::new();
    ha_blockrep::drbddisk::register(&mut reg, BTreeMap::from([("r0".to_string(), b.clone())]));
    assert!(reg.build(&spec("nope")).is_err());
    let res = reg.build(&spec("r0")).unwrap();
    assert_eq!(res.monitor().await, OcfCode::NotRunning);
    assert_eq!(res.start().await, OcfCode::Success);
    assert_eq!(b.status().role, Role::Primary);
    assert_eq!(res.monitor().await, OcfCode::Success);
    a.wait_for("peer role", Duration::from_secs(5), |s| {
        s.peer_role == Role::Primary
    })
    .await
    .unwrap();
    assert_eq!(res.stop().await, OcfCode::Success);
    assert_eq!(res.monitor().await, OcfCode::NotRunning);
    // An Outdated node refuses to start.
    b.disconnect().await;
    b.outdate().await.unwrap();
    assert_eq!(b.status().disk, DiskState::Outdated);
    assert_eq!(res.start().await, OcfCode::ErrGeneric);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_resource_only_marks_peer_outdated() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut ca = cfg("alpha");
    ca.fencing = Fencing::ResourceOnly;
    let c2 = calls.clone();
    ca.fence_handler = Some(Arc::new(move |peer: &str| {
        assert_eq!(peer, "beta");
        c2.fetch_add(1, Ordering::SeqCst);
        true
    }));
    let (a, _) = mem_node(ca, 16 * MIB).await;
    let (b, _) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    assert!(!a.peer_outdated().await);
    b.kill();
    a.wait_for("peer lost", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    for _ in 0..100 {
        if a.peer_outdated().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.peer_outdated().await);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(a.dump_md().await.contains("peer-outdated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_detected_by_ping_timeout() {
    let (a, _) = mem_node(cfg("alpha"), 16 * MIB).await;
    // A "peer" that accepts the TCP connection and then never says anything.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut socks = Vec::new();
        loop {
            let (s, _) = l.accept().await.unwrap();
            socks.push(s);
        }
    });
    a.connect(addr);
    a.wait_for("handshake", Duration::from_secs(2), |s| {
        s.conn == ConnState::WFReportParams
    })
    .await
    .unwrap();
    // Handshake timeout is max(ping_timeout, 2 s); afterwards the engine retries.
    a.wait_for("retry", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_from_drbd_conf_connect() {
    let text = r#"
resource r0 {
  protocol C;
  net { shared-secret "s"; ping-int 1; ping-timeout 5; }
  on alpha { device /dev/drbd0; disk /dev/x; address 127.0.0.1:17788; meta-disk internal; }
  on beta  { device /dev/drbd0; disk /dev/y; address 127.0.0.1:17789; meta-disk internal; }
}"#;
    let conf = DrbdConf::parse(text, "r0.res", std::path::Path::new(".")).unwrap();
    let r = conf.resource("r0").unwrap();
    let (a, am) = mem_node(r.engine_config("alpha").unwrap(), 16 * MIB).await;
    let (b, bm) = mem_node(r.engine_config("beta").unwrap(), 16 * MIB).await;
    a.promote(true).await.unwrap();
    // Port 0 instead of the configured one keeps parallel test runs apart.
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    wait_established(&a, &b).await;
    a.write(0, bytes::Bytes::from(vec![3u8; 4096]), true)
        .await
        .unwrap();
    assert_eq!(am.snapshot()[..4096], bm.snapshot()[..4096]);
    let st = a.status();
    assert_eq!(st.peer_disk, DiskState::UpToDate);
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["role"], "Primary");
}

/// A TCP relay that can be frozen: it keeps the sockets open but stops forwarding, as a
/// network that silently drops everything would.
async fn freezable_proxy(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let f = frozen.clone();
    tokio::spawn(async move {
        loop {
            let (down, _) = l.accept().await.unwrap();
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            for (mut r, mut w, f) in [
                (
                    Box::new(dr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    f.clone(),
                ),
                (Box::new(ur) as _, Box::new(dw) as _, f.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if f.load(Ordering::SeqCst) {
                            // Frozen: swallow everything, hold the socket open.
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_network_is_detected_and_primary_keeps_serving() {
    let (a, _) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, _) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = a.listen(any_port()).await.unwrap();
    let (proxy, frozen) = freezable_proxy(addr).await;
    b.connect(proxy);
    wait_established(&a, &b).await;
    frozen.store(true, Ordering::SeqCst);
    let t = std::time::Instant::now();
    // A protocol C write blocks until the keep-alive declares the peer dead, then completes
    // locally and is marked for resync.
    a.write(0, bytes::Bytes::from(vec![1u8; 4096]), false)
        .await
        .unwrap();
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(400) && el < Duration::from_secs(3),
        "{el:?}"
    );
    let st = a.status();
    assert_ne!(st.conn, ConnState::Connected);
    assert_eq!(st.oos, 4);
    assert_eq!(st.role, Role::Primary);
}
