//! The tokio NBD server.

use super::Export;
use super::proto::*;
use crate::error::{Error, Result};
use crate::repl::packet::SPLIT_MIN;
use crate::sendbuf::SendBuf;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Requests served concurrently per connection.
const MAX_IN_FLIGHT: usize = 128;

/// NBD server over a set of exports.
#[derive(Clone)]
pub struct NbdServer {
    exports: Arc<Vec<Arc<dyn Export>>>,
}

impl NbdServer {
    /// Server for `exports` (looked up by name; the first one is the default for "").
    pub fn new(exports: Vec<Arc<dyn Export>>) -> Self {
        NbdServer {
            exports: Arc::new(exports),
        }
    }

    /// Bind `addr` and serve in the background; returns the bound address and the task.
    pub async fn spawn(
        self,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("NBD listen on {addr}"), e))?;
        let local = l.local_addr().map_err(|e| Error::io("local address", e))?;
        Ok((local, tokio::spawn(self.serve(l))))
    }

    /// Accept and serve clients forever.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((sock, peer)) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.client(sock).await {
                            tracing::debug!(%peer, error = %e, "NBD client ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NBD accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn find(&self, name: &str) -> Option<Arc<dyn Export>> {
        if name.is_empty() {
            return self.exports.first().cloned();
        }
        self.exports.iter().find(|e| e.name() == name).cloned()
    }

    async fn client(&self, mut sock: TcpStream) -> Result<()> {
        let _ = sock.set_nodelay(true);
        let io = |e| Error::io("NBD handshake", e);
        let mut hello = Vec::with_capacity(18);
        hello.extend(NBDMAGIC.to_be_bytes());
        hello.extend(IHAVEOPT.to_be_bytes());
        hello.extend((FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        sock.write_all(&hello).await.map_err(io)?;
        let cflags = sock.read_u32().await.map_err(io)?;
        let no_zeroes = cflags & CFLAG_NO_ZEROES != 0;
        let export = loop {
            let mut h = [0u8; 16];
            sock.read_exact(&mut h).await.map_err(io)?;
            let (magic, option, len) =
                decode_option_header(&h).map_err(|e| Error::Protocol(e.to_string()))?;
            if magic != IHAVEOPT {
                return Err(Error::Protocol(format!("bad option magic 0x{magic:x}")));
            }
            if len > 64 << 10 {
                return Err(Error::Protocol(format!(
                    "option data of {len} bytes too large"
                )));
            }
            let mut data = vec![0u8; len as usize];
            sock.read_exact(&mut data).await.map_err(io)?;
            match option {
                opt::EXPORT_NAME => {
                    let name = String::from_utf8_lossy(&data).into_owned();
                    let Some(e) = self.find(&name) else {
                        return Err(Error::Protocol(format!("unknown export {name:?}")));
                    };
                    // EXPORT_NAME has no error reply: the only way to refuse is to close.
                    e.check_serving()?;
                    let mut b = Vec::new();
                    b.extend(e.size().to_be_bytes());
                    b.extend(transmission_flags().to_be_bytes());
                    if !no_zeroes {
                        b.extend([0u8; 124]);
                    }
                    sock.write_all(&b).await.map_err(io)?;
                    break e;
                }
                opt::ABORT => {
                    let _ = sock.write_all(&option_reply(option, rep::ACK, &[])).await;
                    return Ok(());
                }
                opt::LIST => {
                    let mut out = BytesMut::new();
                    for e in self.exports.iter() {
                        let n = e.name().as_bytes();
                        let mut d = Vec::with_capacity(4 + n.len());
                        d.extend((n.len() as u32).to_be_bytes());
                        d.extend(n);
                        out.extend_from_slice(&option_reply(option, rep::SERVER, &d));
                    }
                    out.extend_from_slice(&option_reply(option, rep::ACK, &[]));
                    sock.write_all(&out).await.map_err(io)?;
                }
                opt::INFO | opt::GO => {
                    let reply = match decode_go(&data) {
                        Err(_) => Err(option_reply(option, rep::ERR_INVALID, b"malformed request")),
                        Ok((name, _infos)) => match self.find(&name) {
                            None => Err(option_reply(
                                option,
                                rep::ERR_UNKNOWN,
                                format!("no export named {name:?}").as_bytes(),
                            )),
                            Some(e) => match e.check_serving() {
                                Err(why) => Err(option_reply(
                                    option,
                                    rep::ERR_POLICY,
                                    why.to_string().as_bytes(),
                                )),
                                Ok(()) => Ok(e),
                            },
                        },
                    };
                    match reply {
                        Err(r) => sock.write_all(&r).await.map_err(io)?,
                        Ok(e) => {
                            let mut out = BytesMut::new();
                            let mut d = Vec::new();
                            d.extend(info::EXPORT.to_be_bytes());
                            d.extend(e.size().to_be_bytes());
                            d.extend(transmission_flags().to_be_bytes());
                            out.extend_from_slice(&option_reply(option, rep::INFO, &d));
                            let mut bs = Vec::new();
                            bs.extend(info::BLOCK_SIZE.to_be_bytes());
                            bs.extend(1u32.to_be_bytes());
                            bs.extend(4096u32.to_be_bytes());
                            bs.extend(MAX_REQUEST.to_be_bytes());
                            out.extend_from_slice(&option_reply(option, rep::INFO, &bs));
                            out.extend_from_slice(&option_reply(option, rep::ACK, &[]));
                            sock.write_all(&out).await.map_err(io)?;
                            if option == opt::GO {
                                break e;
                            }
                        }
                    }
                }
                other => {
                    sock.write_all(&option_reply(other, rep::ERR_UNSUP, &[]))
                        .await
                        .map_err(io)?;
                }
            }
        };
        tracing::debug!(export = export.name(), "NBD transmission phase");
        transmission(sock, export).await
    }
}

fn transmission_flags() -> u16 {
    tflag::HAS_FLAGS
        | tflag::SEND_FLUSH
        | tflag::SEND_FUA
        | tflag::SEND_TRIM
        | tflag::SEND_WRITE_ZEROES
}

fn errno_of(e: &Error) -> u32 {
    match e {
        Error::OutOfRange { .. } => errno::ENOSPC,
        Error::State(_) => errno::EPERM,
        _ => errno::EIO,
    }
}

async fn transmission(sock: TcpStream, export: Arc<dyn Export>) -> Result<()> {
    let (mut rd, wr) = sock.into_split();
    // Replies go out as requests complete, in whatever order that is: straight from the
    // request's task when the socket is idle, else through the writer task.
    let out = Arc::new(SendBuf::new(wr, Box::new(|_| {})));
    let writer = {
        let out = out.clone();
        tokio::spawn(async move { out.drain().await })
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let io = |e| Error::io("NBD receive", e);
    let size = export.size();
    let result = loop {
        let mut h = [0u8; REQUEST_LEN];
        if let Err(e) = rd.read_exact(&mut h).await {
            break Err(io(e));
        }
        let req = match decode_request(&h) {
            Ok(r) => r,
            Err(e) => break Err(Error::Protocol(e.to_string())),
        };
        let payload = if req.cmd == Cmd::Write {
            if req.len > MAX_REQUEST {
                // Cannot skip an unbounded payload safely: drop the client.
                break Err(Error::Protocol(format!(
                    "write of {} bytes too large",
                    req.len
                )));
            }
            let mut d = vec![0u8; req.len as usize];
            if let Err(e) = rd.read_exact(&mut d).await {
                break Err(io(e));
            }
            Some(Bytes::from(d))
        } else {
            None
        };
        if req.cmd == Cmd::Disc {
            break Ok(());
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break Ok(());
        };
        let (export, out) = (export.clone(), out.clone());
        tokio::spawn(async move {
            let (err, data) = match handle(&*export, req, payload, size).await {
                Ok(data) => (0, data),
                Err(e) => (e, None),
            };
            out.send_split(|b| {
                b.extend_from_slice(&simple_reply(err, req.handle));
                match data {
                    // Large read data is queued as is, small data rides along (and may
                    // go out directly from this task).
                    Some(d) if d.len() >= SPLIT_MIN => Some(d),
                    Some(d) => {
                        b.extend_from_slice(&d);
                        None
                    }
                    None => None,
                }
            });
            drop(permit);
        });
    };
    // Let in-flight requests finish and their replies drain before closing.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
    out.flushed().await;
    out.close();
    let _ = writer.await;
    result
}

async fn handle(
    export: &dyn Export,
    req: Request,
    payload: Option<Bytes>,
    size: u64,
) -> std::result::Result<Option<Bytes>, u32> {
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let in_range = req
        .offset
        .checked_add(u64::from(req.len))
        .is_some_and(|e| e <= size);
    let map = |e: Error| {
        tracing::debug!(error = %e, cmd = ?req.cmd, "NBD request failed");
        errno_of(&e)
    };
    match req.cmd {
        Cmd::Read => {
            if req.len > MAX_REQUEST {
                return Err(errno::EINVAL);
            }
            if !in_range {
                return Err(errno::EINVAL);
            }
            export
                .read(req.offset, req.len as usize)
                .await
                .map(Some)
                .map_err(map)
        }
        Cmd::Write => {
            if !in_range {
                return Err(errno::ENOSPC);
            }
            let data = payload.unwrap_or_default();
            export.write(req.offset, data, fua).await.map_err(map)?;
            Ok(None)
        }
        Cmd::Flush => export.flush().await.map(|_| None).map_err(map),
        Cmd::Trim => {
            if !in_range {
                return Err(errno::EINVAL);
            }
            export
                .trim(req.offset, u64::from(req.len))
                .await
                .map_err(map)?;
            if fua {
                export.flush().await.map_err(map)?;
            }
            Ok(None)
        }
        Cmd::WriteZeroes => {
            if !in_range {
                return Err(errno::ENOSPC);
            }
            export
                .write_zeroes(
                    req.offset,
                    u64::from(req.len),
                    req.flags & CMD_FLAG_NO_HOLE == 0,
                )
                .await
                .map_err(map)?;
            if fua {
                export.flush().await.map_err(map)?;
            }
            Ok(None)
        }
        Cmd::Cache => Ok(None),
        Cmd::Disc => Ok(None),
        Cmd::BlockStatus | Cmd::Other(_) => Err(errno::EINVAL),
    }
}
