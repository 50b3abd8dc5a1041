//! Writer for uncompressed `newc` cpio archives, the format the kernel unpacks as initramfs.
//!
//! Written by hand (instead of calling `cpio`) so archives are deterministic (owner root,
//! mtime 0) and the per-run archive needs no host tool.

use std::io::{self, Read, Write};
use std::path::Path;

/// S_IFDIR / S_IFREG / S_IFLNK / S_IFCHR as found in `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Streams entries into a newc archive. Call [`CpioWriter::finish`] to write the trailer.
pub(crate) struct CpioWriter<W: Write> {
    w: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub(crate) fn new(w: W) -> Self {
        CpioWriter {
            w,
            ino: 1,
            written: 0,
        }
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        nlink: u32,
        rdev: (u32, u32),
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: file too large for cpio"),
            )
        })?;
        let name = name.trim_start_matches('/');
        let namesize = name.len() + 1;
        let ino = self.ino;
        self.ino += 1;
        let hdr = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size32:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..rem])
    }

    /// A directory entry.
    pub(crate) fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 0, 2, (0, 0))
    }

    /// A regular file from memory.
    pub(crate) fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.header(
            name,
            S_IFREG | (perm & 0o7777),
            data.len() as u64,
            1,
            (0, 0),
        )?;
        self.put(data)?;
        self.pad()
    }

    /// A regular file streamed from a host file.
    pub(crate) fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> io::Result<()> {
        let f = std::fs::File::open(src)?;
        let len = f.metadata()?.len();
        self.header(name, S_IFREG | (perm & 0o7777), len, 1, (0, 0))?;
        let copied = io::copy(&mut f.take(len), &mut self.w)?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while archiving", src.display()),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// A symbolic link.
    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, S_IFLNK | 0o777, target.len() as u64, 1, (0, 0))?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// A character device node.
    pub(crate) fn char_dev(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.header(name, S_IFCHR | (perm & 0o7777), 0, 1, (major, minor))
    }

    /// Add a host directory tree under `prefix` (pre-order, sorted, so parents come first).
    pub(crate) fn tree(&mut self, root: &Path, prefix: &str) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries: Vec<_> = std::fs::read_dir(root)?.collect::<io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
            let md = std::fs::symlink_metadata(e.path())?;
            let perm = md.permissions().mode();
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(e.path())?;
                self.symlink(&name, &target.to_string_lossy())?;
            } else if md.is_dir() {
                self.dir(&name, perm)?;
                self.tree(&e.path(), &name)?;
            } else if md.is_file() {
                self.file_from(&name, perm, &e.path())?;
            }
        }
        Ok(())
    }

    /// Write the trailer and return the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, 1, (0, 0))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_named() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("a", 0o755).unwrap();
        w.file("a/b", 0o644, b"hello").unwrap();
        w.symlink("c", "a/b").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("a/b\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // File size field of "a/b" is 5.
        let pos = text.find("a/b\0").unwrap();
        let hdr = &text[pos - 110..pos];
        assert_eq!(&hdr[54..62], "00000005");
    }
}
