//! Ordered sending on a TCP socket shared by many tasks.
//!
//! A message goes straight to the socket from the task that sends it when nothing else is
//! queued (a non-blocking write): a replicated write, an ack or an NBD reply then costs no hop
//! through a writer task, which matters for small synchronous writes. Otherwise it is
//! appended to one buffer that a writer task ([`SendBuf::drain`]) empties in order. Large
//! messages always take that path, so no sender blocks a runtime thread copying megabytes,
//! and a bulk payload handed over as [`Bytes`] is queued as is, never copied.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Largest message written directly by its sender.
const DIRECT_MAX: usize = 64 << 10;

#[derive(Default)]
struct State {
    /// Queued pieces that go out before `buf` (bulk payloads and what preceded them).
    segs: VecDeque<Bytes>,
    /// Encoded messages not yet on the socket, in order (after `segs`).
    buf: BytesMut,
    /// The writer task owns the socket (it is draining `buf`): senders only append.
    writing: bool,
    /// Connection gone: nothing more is sent.
    closed: bool,
}

/// Called with the number of bytes each time some reach the socket.
pub(crate) type OnSent = Box<dyn Fn(usize) + Send + Sync>;

/// The sending half of a socket with an ordered queue.
pub(crate) struct SendBuf {
    wr: OwnedWriteHalf,
    st: Mutex<State>,
    wake: Notify,
    on_sent: OnSent,
}

impl SendBuf {
    pub(crate) fn new(wr: OwnedWriteHalf, on_sent: OnSent) -> Self {
        SendBuf {
            wr,
            st: Mutex::new(State::default()),
            wake: Notify::new(),
            on_sent,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send what `encode` appends, behind everything sent before; false once closed.
    pub(crate) fn send(&self, encode: impl FnOnce(&mut BytesMut)) -> bool {
        self.send_split(|b| {
            encode(b);
            None
        })
    }

    /// Send what `encode` appends followed by the payload it returns (queued without a
    /// copy), behind everything sent before; false once closed.
    pub(crate) fn send_split(&self, encode: impl FnOnce(&mut BytesMut) -> Option<Bytes>) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        let start = st.buf.len();
        if let Some(tail) = encode(&mut st.buf) {
            let head = st.buf.split().freeze();
            st.segs.push_back(head);
            st.segs.push_back(tail);
            if st.writing {
                return true;
            }
            st.writing = true;
            drop(st);
            self.wake.notify_one();
            return true;
        }
        if st.writing {
            return true; // the writer task sends it after what is already queued
        }
        if start == 0 && st.buf.len() <= DIRECT_MAX {
            match self.wr.try_write(&st.buf) {
                Ok(n) => {
                    (self.on_sent)(n);
                    st.buf.advance(n);
                    if st.buf.is_empty() {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!(error = %e, "send failed");
                    drop(st);
                    self.close();
                    return false;
                }
            }
        }
        st.writing = true;
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Writer task: send queued bytes in order until the socket fails or [`SendBuf::close`].
    pub(crate) async fn drain(&self) {
        loop {
            self.wake.notified().await;
            loop {
                let (segs, rest) = {
                    let mut st = self.lock();
                    if st.closed {
                        return;
                    }
                    if st.segs.is_empty() && st.buf.is_empty() {
                        st.writing = false;
                        break;
                    }
                    (std::mem::take(&mut st.segs), st.buf.split().freeze())
                };
                for chunk in segs.iter().chain(std::iter::once(&rest)) {
                    if let Err(e) = self.write_all(chunk).await {
                        tracing::debug!(error = %e, "send failed");
                        self.close();
                        return;
                    }
                    (self.on_sent)(chunk.len());
                }
            }
        }
    }

    /// Wait until nothing is queued (or the socket is closed).
    pub(crate) async fn flushed(&self) {
        loop {
            {
                let st = self.lock();
                if st.closed || !st.writing {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    async fn write_all(&self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            self.wr.writable().await?;
            match self.wr.try_write(b) {
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stop sending and shut the socket's sending side (the peer sees the end at once, as
    /// when a writer task owning the socket is dropped).
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        st.buf.clear();
        st.segs.clear();
        self.wake.notify_one(); // let the writer task see it and end
        // SAFETY: plain syscall on the socket this queue owns (open while `self` lives).
        unsafe {
            libc::shutdown(self.wr.as_ref().as_raw_fd(), libc::SHUT_WR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_senders_keep_each_senders_order() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move { tokio::net::TcpStream::connect(addr).await });
        let (srv, _) = l.accept().await.unwrap();
        let (_rd, wr) = srv.into_split();
        let sent = Arc::new(AtomicUsize::new(0));
        let s2 = sent.clone();
        let q = Arc::new(SendBuf::new(
            wr,
            Box::new(move |n| {
                s2.fetch_add(n, Ordering::Relaxed);
            }),
        ));
        let writer = {
            let q = q.clone();
            tokio::spawn(async move { q.drain().await })
        };
        // 4 senders, each numbering its messages; some messages are large (queued path).
        let mut tasks = Vec::new();
        for id in 0..4u8 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200u32 {
                    // Some large messages, copied or handed over as a payload.
                    let len = if i % 25 == 0 { 100_000 } else { 8 };
                    let split = i % 50 == 0;
                    assert!(q.send_split(|b| {
                        b.extend_from_slice(&[id]);
                        b.extend_from_slice(&i.to_be_bytes());
                        b.extend_from_slice(&(len as u32).to_be_bytes());
                        if split {
                            return Some(Bytes::from(vec![id; len]));
                        }
                        b.extend_from_slice(&vec![id; len]);
                        None
                    }));
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        q.flushed().await;
        q.close();
        writer.await.unwrap();
        let mut c = client.await.unwrap().unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), sent.load(Ordering::Relaxed));
        let mut next = [0u32; 4];
        let mut p = &all[..];
        while !p.is_empty() {
            let id = p[0] as usize;
            let i = u32::from_be_bytes(p[1..5].try_into().unwrap());
            let len = u32::from_be_bytes(p[5..9].try_into().unwrap()) as usize;
            assert_eq!(i, next[id], "sender {id} out of order");
            assert!(p[9..9 + len].iter().all(|&b| b as usize == id));
            next[id] += 1;
            p = &p[9 + len..];
        }
        assert_eq!(next, [200; 4]);
    }
}
