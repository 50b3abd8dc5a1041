//! NBD server driven by a hand-written client: option negotiation details, pipelining of many
//! requests, replies as they complete, and garbage input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ha_blockrep::nbd::proto::*;
use ha_blockrep::nbd::{Export, NbdServer};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn option(s: &mut TcpStream, opt: u32, data: &[u8]) {
    let mut b = Vec::new();
    b.extend(IHAVEOPT.to_be_bytes());
    b.extend(opt.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend(data);
    s.write_all(&b).await.unwrap();
}

async fn reply(s: &mut TcpStream) -> (u32, u32, Vec<u8>) {
    assert_eq!(s.read_u64().await.unwrap(), REPLY_MAGIC);
    let opt = s.read_u32().await.unwrap();
    let kind = s.read_u32().await.unwrap();
    let len = s.read_u32().await.unwrap();
    let mut d = vec![0; len as usize];
    s.read_exact(&mut d).await.unwrap();
    (opt, kind, d)
}

async fn handshake(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(s.read_u64().await.unwrap(), NBDMAGIC);
    assert_eq!(s.read_u64().await.unwrap(), IHAVEOPT);
    let flags = s.read_u16().await.unwrap();
    assert_eq!(flags & FLAG_FIXED_NEWSTYLE, FLAG_FIXED_NEWSTYLE);
    s.write_u32(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_and_pipelined_requests() {
    let (eng, _) = mem_node(cfg("alpha"), 16 * MIB).await;
    let srv = NbdServer::new(vec![Arc::new(eng.clone()) as Arc<dyn Export>]);
    let (addr, task) = srv.spawn(any_port()).await.unwrap();

    let mut s = handshake(addr).await;
    // LIST names the export.
    option(&mut s, opt::LIST, &[]).await;
    let (_, kind, d) = reply(&mut s).await;
    assert_eq!(kind, rep::SERVER);
    assert_eq!(&d[4..], b"r0");
    assert_eq!(reply(&mut s).await.1, rep::ACK);
    // Unknown option, unknown export, Secondary refusal.
    option(&mut s, 999, &[]).await;
    assert_eq!(reply(&mut s).await.1, rep::ERR_UNSUP);
    option(&mut s, opt::INFO, &encode_go("nope", &[])).await;
    assert_eq!(reply(&mut s).await.1, rep::ERR_UNKNOWN);
    option(&mut s, opt::GO, &encode_go("r0", &[])).await;
    let (_, kind, msg) = reply(&mut s).await;
    assert_eq!(kind, rep::ERR_POLICY);
    assert!(String::from_utf8_lossy(&msg).contains("Secondary"));
    eng.promote(true).await.unwrap();
    option(&mut s, opt::GO, &encode_go("r0", &[info::BLOCK_SIZE])).await;
    let (_, kind, d) = reply(&mut s).await;
    assert_eq!(kind, rep::INFO);
    assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), eng.size());
    assert_eq!(reply(&mut s).await.1, rep::INFO);
    assert_eq!(reply(&mut s).await.1, rep::ACK);

    // 128 writes then 128 reads, all pipelined before reading any reply.
    let n = 128u64;
    let mut out = Vec::new();
    for i in 0..n {
        let r = Request {
            flags: 0,
            cmd: Cmd::Write,
            handle: i,
            offset: i * 4096,
            len: 4096,
        };
        out.extend(encode_request(&r));
        out.extend(vec![i as u8; 4096]);
    }
    s.write_all(&out).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..n {
        assert_eq!(s.read_u32().await.unwrap(), SIMPLE_REPLY_MAGIC);
        assert_eq!(s.read_u32().await.unwrap(), 0);
        seen.insert(s.read_u64().await.unwrap());
    }
    assert_eq!(seen.len(), n as usize);
    let mut out = Vec::new();
    for i in 0..n {
        let r = Request {
            flags: 0,
            cmd: Cmd::Read,
            handle: 1000 + i,
            offset: i * 4096,
            len: 4096,
        };
        out.extend(encode_request(&r));
    }
    s.write_all(&out).await.unwrap();
    for _ in 0..n {
        assert_eq!(s.read_u32().await.unwrap(), SIMPLE_REPLY_MAGIC);
        assert_eq!(s.read_u32().await.unwrap(), 0);
        let h = s.read_u64().await.unwrap() - 1000;
        let mut d = vec![0u8; 4096];
        s.read_exact(&mut d).await.unwrap();
        assert!(
            d.iter().all(|&b| b == h as u8),
            "read {h} returned wrong data"
        );
    }
    // Errors: read past the end, unknown command; then flush and disconnect.
    let r = Request {
        flags: 0,
        cmd: Cmd::Read,
        handle: 7,
        offset: eng.size(),
        len: 512,
    };
    s.write_all(&encode_request(&r)).await.unwrap();
    assert_eq!(s.read_u32().await.unwrap(), SIMPLE_REPLY_MAGIC);
    assert_eq!(s.read_u32().await.unwrap(), errno::EINVAL);
    assert_eq!(s.read_u64().await.unwrap(), 7);
    let r = Request {
        flags: 0,
        cmd: Cmd::Flush,
        handle: 8,
        offset: 0,
        len: 0,
    };
    s.write_all(&encode_request(&r)).await.unwrap();
    assert_eq!(s.read_u32().await.unwrap(), SIMPLE_REPLY_MAGIC);
    assert_eq!(s.read_u32().await.unwrap(), 0);
    assert_eq!(s.read_u64().await.unwrap(), 8);
    let r = Request {
        flags: 0,
        cmd: Cmd::Disc,
        handle: 9,
        offset: 0,
        len: 0,
    };
    s.write_all(&encode_request(&r)).await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // Garbage after the handshake closes the connection; the server keeps serving others.
    let mut g = handshake(addr).await;
    option(&mut g, opt::GO, &encode_go("r0", &[])).await;
    while reply(&mut g).await.1 != rep::ACK {}
    g.write_all(&[0xffu8; 64]).await.unwrap();
    let mut rest = Vec::new();
    let _ = g.read_to_end(&mut rest).await;
    let mut s2 = handshake(addr).await;
    option(&mut s2, opt::ABORT, &[]).await;
    assert_eq!(reply(&mut s2).await.1, rep::ACK);
    task.abort();
}
