//! File or raw block device backend (blocking syscalls on tokio's blocking pool).

use super::{BlockDevice, WriteDone, check_range};
use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment used for `O_DIRECT` buffers, offsets and lengths.
const DIRECT_ALIGN: usize = 4096;

/// A regular file or a block device node.
pub struct FileDevice {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    direct: bool,
    is_regular: bool,
}

impl FileDevice {
    /// Open an existing file or block device; `direct` bypasses the page cache (`O_DIRECT`),
    /// which requires 4 KiB aligned requests.
    pub fn open(path: &Path, direct: bool) -> Result<Self> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(libc::O_DIRECT);
        }
        let mut file = opts
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        // Seeking to the end gives the size of regular files and block devices alike.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("size of {}", path.display()), e))?;
        let is_regular = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .is_file();
        Ok(FileDevice {
            file: Arc::new(file),
            path: path.to_owned(),
            size,
            direct,
            is_regular,
        })
    }

    /// Create (or truncate) a regular file of `size` bytes and open it buffered.
    pub fn create(path: &Path, size: u64) -> Result<Self> {
        let f =
            File::create(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        f.set_len(size)
            .map_err(|e| Error::io(format!("resize {}", path.display()), e))?;
        drop(f);
        Self::open(path, false)
    }

    /// Path this device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_direct(&self, offset: u64, len: u64) -> Result<()> {
        let a = DIRECT_ALIGN as u64;
        if self.direct && (!offset.is_multiple_of(a) || !len.is_multiple_of(a)) {
            return Err(Error::State(format!(
                "{}: O_DIRECT needs {a}-byte aligned requests (offset {offset}, length {len})",
                self.path.display()
            )));
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        what: String,
        f: impl FnOnce(&File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let file = self.file.clone();
        match tokio::task::spawn_blocking(move || f(&file)).await {
            Ok(r) => r.map_err(|e| Error::io(what, e)),
            Err(e) => Err(Error::io(what, std::io::Error::other(e))),
        }
    }
}

/// A buffer of `len` bytes whose start is `DIRECT_ALIGN` aligned (safe: over-allocate and slice).
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0u8; len + DIRECT_ALIGN];
        let addr = buf.as_ptr() as usize;
        let start = (DIRECT_ALIGN - addr % DIRECT_ALIGN) % DIRECT_ALIGN;
        Aligned { buf, start, len }
    }
    fn slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    fn slice_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Read exactly `len` bytes at `offset` into a fresh vector without zeroing it first
/// (resync reads are megabytes each; the kernel fills the buffer anyway).
fn pread_exact(f: &File, len: usize, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut v: Vec<u8> = Vec::with_capacity(len);
    while v.len() < len {
        let done = v.len();
        // SAFETY: the kernel writes at most `len - done` bytes into the vector's spare
        // capacity (allocated above, `len` bytes in all); `set_len` below covers only bytes
        // it reported as written.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                v.as_mut_ptr().add(done).cast::<libc::c_void>(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match n {
            n if n > 0 => {
                // SAFETY: `n` more bytes were initialised by the read, within capacity.
                unsafe { v.set_len(done + n as usize) };
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(v)
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on a valid, open file descriptor; no memory is passed.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[async_trait]
impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        check_range(offset, len as u64, self.size)?;
        self.check_direct(offset, len as u64)?;
        let direct = self.direct;
        self.blocking(
            format!("read {} at {offset}", self.path.display()),
            move |f| {
                if direct {
                    let mut b = Aligned::new(len);
                    f.read_exact_at(b.slice_mut(), offset)?;
                    Ok(Bytes::copy_from_slice(b.slice()))
                } else {
                    Ok(Bytes::from(pread_exact(f, len, offset)?))
                }
            },
        )
        .await
    }

    async fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        self.write_bytes(offset, Bytes::copy_from_slice(data), fua)
            .await
    }

    async fn write_bytes(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        self.write_inner(offset, data, fua, None).await
    }

    async fn write_notify(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
        done: WriteDone,
    ) -> Result<()> {
        self.write_inner(offset, data, fua, Some(done)).await
    }
    async fn flush(&self) -> Result<()> {
        self.blocking(format!("flush {}", self.path.display()), |f| f.sync_data())
            .await
    }

    async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size)?;
        if !self.is_regular {
            return self.write_zeroes(offset, len).await;
        }
        let r = self
            .blocking(format!("discard {}", self.path.display()), move |f| {
                fallocate(
                    f,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                )
            })
            .await;
        match r {
            Ok(()) => Ok(()),
            // Filesystems without hole punching: fall back to writing zeroes.
            Err(_) => self.write_zeroes_slow(offset, len).await,
        }
    }

    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size)?;
        if self.is_regular {
            let r = self
                .blocking(format!("zero {}", self.path.display()), move |f| {
                    fallocate(f, libc::FALLOC_FL_ZERO_RANGE, offset, len)
                })
                .await;
            if r.is_ok() {
                return Ok(());
            }
        }
        self.write_zeroes_slow(offset, len).await
    }
}

impl FileDevice {
    async fn write_inner(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
        done: Option<WriteDone>,
    ) -> Result<()> {
        check_range(offset, data.len() as u64, self.size)?;
        self.check_direct(offset, data.len() as u64)?;
        // The blocking pool needs owned data: buffered writes hand the `Bytes` over as is,
        // O_DIRECT needs an aligned copy.
        let data = if self.direct {
            let mut b = Aligned::new(data.len());
            b.slice_mut().copy_from_slice(&data);
            Err(b)
        } else {
            Ok(data)
        };
        self.blocking(
            format!("write {} at {offset}", self.path.display()),
            move |f| {
                let r = (|| {
                    match &data {
                        Ok(v) => f.write_all_at(v, offset)?,
                        Err(a) => f.write_all_at(a.slice(), offset)?,
                    }
                    if fua {
                        f.sync_data()?;
                    }
                    Ok(())
                })();
                if let Some(done) = done {
                    done(r.is_ok());
                }
                r
            },
        )
        .await
    }

    async fn write_zeroes_slow(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write(offset + done, &zeros[..n as usize], false)
                .await?;
            done += n;
        }
        Ok(())
    }
}
