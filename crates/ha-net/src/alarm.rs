//! A one-shot wake-up at an exact monotonic time (timerfd), for the node loop.
//!
//! Why not `tokio::time::sleep_until`: tokio's timer wheel has millisecond resolution and
//! rounds up, so a 2 ms keepalive ticks every ~3 ms, and each newly registered earlier
//! deadline unparks the driver through its eventfd (an extra write and epoll round per tick).
//! A timerfd armed at an absolute CLOCK_MONOTONIC time fires within microseconds and costs one
//! `timerfd_settime` only when the deadline changes.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::{Error, Result};

/// An absolute-time alarm relative to a base instant taken at creation.
#[derive(Debug)]
pub struct Alarm {
    fd: AsyncFd<OwnedFd>,
    /// CLOCK_MONOTONIC at creation.
    base: Duration,
    armed: Option<Duration>,
}

fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

impl Alarm {
    /// A disarmed alarm whose offsets count from now. Call it right *after* taking the
    /// `Instant` the offsets are computed from, so the alarm never fires early for it.
    /// Needs a tokio runtime.
    pub fn new() -> Result<Alarm> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(Error::io("timerfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the OwnedFd is a valid open descriptor, owned by the AsyncFd for its whole
        // lifetime, and its as_raw_fd always returns that descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
            .map_err(|e| Error::io("register timerfd", e.into_parts().1))?;
        Ok(Alarm {
            fd,
            base: monotonic(),
            armed: None,
        })
    }

    /// Fire at `at` after the base (`None`: disarm). A time in the past fires at once.
    pub fn set(&mut self, at: Option<Duration>) -> Result<()> {
        if self.armed == at {
            return Ok(());
        }
        let value = match at {
            // An all-zero it_value would disarm: one nanosecond after the base instead.
            Some(t) => (self.base + t).max(Duration::from_nanos(1)),
            None => Duration::ZERO,
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(value.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(value.subsec_nanos()),
            },
        };
        // SAFETY: valid descriptor and pointer to an initialised itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_fd().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            self.armed = None;
            return Err(Error::io(
                "timerfd_settime",
                std::io::Error::last_os_error(),
            ));
        }
        self.armed = at;
        Ok(())
    }

    /// Wait until the armed time has passed (forever when disarmed). Cancel-safe.
    pub async fn wait(&mut self) {
        loop {
            let Ok(mut guard) = self.fd.readable_mut().await else {
                return std::future::pending().await;
            };
            // No read(2) of the expiry count: the clock says whether the deadline passed
            // (a vDSO call, not a syscall). Each expiry wakes epoll with a fresh edge and
            // re-arming resets the count, so clearing tokio's readiness loses nothing.
            guard.clear_ready();
            if let Some(at) = self.armed
                && monotonic() >= self.base + at
            {
                self.armed = None;
                return;
            }
        }
    }
}
