//! Stream media: frames over any byte stream (heartbeat's serial link).
//!
//! A byte stream has no datagram boundaries and a serial line may drop or corrupt bytes, so
//! every frame goes out as `A5 5A | len u16 | frame`. The reader scans for the sync bytes,
//! checks the length, and hands the frame to the session, whose authentication rejects
//! corrupted ones; after a corrupted length it resynchronises on the next sync bytes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, BaudRate, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::wire::HEADER_LEN;
use crate::{Error, Result};

/// Marks the start of a frame on a stream.
pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Largest frame accepted on a stream (a serial line carries small frames).
pub const MAX_STREAM_FRAME: usize = 16 * 1024;

/// Append `frame` with its stream prefix to `out`.
pub fn encode(frame: &[u8], out: &mut BytesMut) -> Result<()> {
    let len = u16::try_from(frame.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_STREAM_FRAME)
        .ok_or_else(|| Error::Encode(format!("stream frame of {} bytes", frame.len())))?;
    out.reserve(4 + frame.len());
    out.put_slice(&SYNC);
    out.put_u16(len);
    out.put_slice(frame);
    Ok(())
}

/// Take the next complete frame out of `buf`, discarding garbage before it. `None`: more bytes
/// are needed (garbage already consumed is gone).
pub fn extract(buf: &mut BytesMut) -> Option<Bytes> {
    loop {
        let start = buf.windows(2).position(|w| w == SYNC);
        match start {
            None => {
                // Keep a trailing first sync byte: the second may still come.
                let keep = usize::from(buf.last() == Some(&SYNC[0]));
                let drop = buf.len() - keep;
                buf.advance(drop);
                return None;
            }
            Some(i) => buf.advance(i),
        }
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if !(HEADER_LEN..=MAX_STREAM_FRAME).contains(&len) {
            // Not a real frame start: skip these sync bytes and rescan.
            buf.advance(2);
            continue;
        }
        if buf.len() < 4 + len {
            return None;
        }
        buf.advance(4);
        return Some(buf.split_to(len).freeze());
    }
}

fn baud(rate: u32) -> Result<BaudRate> {
    Ok(match rate {
        1200 => BaudRate::B1200,
        2400 => BaudRate::B2400,
        4800 => BaudRate::B4800,
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        r => {
            return Err(Error::Config(format!(
                "baud {r} unsupported; use 9600, 19200, 38400, 57600, 115200 or higher standard rates"
            )));
        }
    })
}

/// Put a terminal in raw mode (no echo, no line editing, 8 bits) at `rate` baud (`None`:
/// leave the speed, e.g. for a pseudo-terminal).
pub fn set_raw(fd: impl AsFd, rate: Option<u32>) -> Result<()> {
    let mut t = termios::tcgetattr(&fd).map_err(|e| Error::io("tcgetattr", e.into()))?;
    termios::cfmakeraw(&mut t);
    if let Some(r) = rate {
        termios::cfsetspeed(&mut t, baud(r)?).map_err(|e| Error::io("cfsetspeed", e.into()))?;
    }
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t).map_err(|e| Error::io("tcsetattr", e.into()))
}

/// A non-blocking file descriptor (tty, pty, pipe) usable as a tokio stream.
#[derive(Debug)]
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    /// Wrap `fd`, switching it to non-blocking mode. Needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> Result<Self> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| Error::io("F_GETFL", e.into()))?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| Error::io("F_SETFL", e.into()))?;
        // SAFETY: an OwnedFd is a valid open descriptor that stays open, and always returns the
        // same number from as_raw_fd, for as long as the AsyncFd owns it.
        let fd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| Error::io("register fd", e.into()))?;
        Ok(FdStream { fd })
    }

    /// Open a serial device in raw mode at `baud_rate`.
    pub fn open_serial(device: &str, baud_rate: u32) -> Result<Self> {
        let fd = open(
            device,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("open serial device {device}"), e.into()))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        set_raw(&fd, Some(baud_rate))?;
        Self::new(fd)
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // A pty whose other side closed reports EIO: end of stream.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
