//! Waking on ICMP errors of unicast media without waking on their traffic.
//!
//! A polled medium is read once per tick, so its socket is not registered with tokio: every
//! received heartbeat would otherwise wake the node a second time per period. "Port
//! unreachable", though, should be acted on at once. The sockets go into an epoll instance of
//! their own with no event asked for: epoll always reports EPOLLERR, and the kernel filters
//! the wake-ups of arriving data out before they reach it. tokio watches that epoll
//! descriptor, which becomes readable only when an error is queued.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{Error, Result};

/// The epoll descriptor, as tokio needs it.
#[derive(Debug)]
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Becomes ready when one of the watched sockets has an error queued.
#[derive(Debug)]
pub struct UnreachableWatch {
    fd: AsyncFd<EpollFd>,
}

impl UnreachableWatch {
    /// Watch `sockets` (which stay owned by their media). Needs a tokio runtime.
    pub fn new<'a>(sockets: impl IntoIterator<Item = &'a std::net::UdpSocket>) -> Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::io("epoll_create1", e.into()))?;
        for (i, s) in sockets.into_iter().enumerate() {
            // Edge-triggered and no event asked for: one wake-up per queued error.
            let ev = EpollEvent::new(EpollFlags::EPOLLET, i as u64);
            epoll
                .add(s.as_fd(), ev)
                .map_err(|e| Error::io("epoll_ctl: watch a udp medium", e.into()))?;
        }
        // SAFETY: the epoll descriptor is owned by the AsyncFd for its whole lifetime and its
        // as_raw_fd always returns that descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) }
            .map_err(|e| Error::io("register the udp error watch", e.into_parts().1))?;
        Ok(UnreachableWatch { fd })
    }

    /// Wait until some watched socket has an error queued (read it with
    /// [`super::Media::poll_unreachable`]).
    pub async fn wait(&self) -> Result<()> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| Error::io("udp error watch", e))?;
            let mut events = [EpollEvent::empty(); 8];
            let mut any = false;
            loop {
                match self.fd.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(n) => {
                        any |= n > 0;
                        if n < events.len() {
                            break;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::io("epoll_wait", e.into())),
                }
            }
            guard.clear_ready();
            if any {
                return Ok(());
            }
        }
    }
}
