//! Reduced copies' file I/O, which bypasses the page cache (`O_DIRECT`): a copy is megabytes
//! written once and read back a few times by a worker that keeps the pixels it reads, so the
//! page cache would hold a second copy of what the worker holds, push out the rendered
//! variants nginx serves, and cost more to fill than the disk does to read. Measured here:
//! 1 GiB written through the page cache took 2.5 s of system time, and 0.07 s with `O_DIRECT`;
//! read back with `O_DIRECT`, 0.05 s. On the catalog trace, writing copies through the page
//! cache was 16% of ross's CPU.
//!
//! `O_DIRECT` wants buffers, lengths and offsets aligned to the device's block. A copy is
//! written through a buffer aligned to [`ALIGN`] (a slice of a `Vec` at an aligned address,
//! reused job after job) in whole blocks, the last one padded with zeros, then cut to its
//! length by the server ([`std::fs::File::set_len`]); it is read ([`read`]) straight into the
//! buffer its pixels are then used in, at an aligned place. On a file system that refuses
//! `O_DIRECT` (tmpfs before Linux 6.6) the file is opened, written or read without it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The alignment of buffers, lengths and offsets: a page, which every block device's logical
/// block divides.
pub const ALIGN: usize = 4096;

/// A buffer this large or smaller is kept for the next job; a larger one is given back.
const KEEP_UP_TO: usize = 64 << 20;

/// Opens `path` to read, bypassing the page cache where the file system allows it.
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    made_direct(file)
}

/// Creates `path` (which must not exist) to write, bypassing the page cache where the file
/// system allows it; only its owner may read it.
pub fn create(path: &Path) -> io::Result<File> {
    // Created first, then made direct: an open with `O_CREAT | O_DIRECT` that the file system
    // refuses would leave the file made all the same.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    made_direct(file).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

/// `file`, bypassing the page cache if its file system allows it (else as it is).
fn made_direct(file: File) -> io::Result<File> {
    match set_direct(&file, true) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(file),
        Err(e) => Err(e.into()),
    }
}

/// Sets or takes off `O_DIRECT` on `file`'s open file (`EINVAL`: its file system has no
/// direct I/O).
fn set_direct(file: &File, on: bool) -> rustix::io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file.as_fd())?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags.difference(OFlags::DIRECT)
    };
    fcntl_setfl(file.as_fd(), flags)
}

/// An aligned buffer, reused.
#[derive(Debug, Default)]
pub struct Aligned {
    buf: Vec<u8>,
}

impl Aligned {
    /// A new, empty buffer (it grows on first use).
    pub fn new() -> Aligned {
        Aligned::default()
    }

    /// `len` bytes at an aligned address (their contents are left from earlier use).
    fn slice(&mut self, len: usize) -> io::Result<&mut [u8]> {
        let need = len + ALIGN;
        if self.buf.len() < need {
            self.buf = Vec::new();
            self.buf
                .try_reserve_exact(need)
                .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "no memory for I/O"))?;
            self.buf.resize(need, 0);
        }
        let at = self.buf.as_ptr().align_offset(ALIGN);
        Ok(&mut self.buf[at..at + len])
    }

    /// Gives back a buffer too large to keep.
    fn trim(&mut self) {
        if self.buf.len() > KEEP_UP_TO {
            self.buf = Vec::new();
        }
    }

    /// Writes `parts`, one after the other, to the start of `file` in whole blocks (the last
    /// padded with zeros): the caller cuts the file to the length returned.
    pub fn write(&mut self, file: &File, parts: &[&[u8]]) -> io::Result<u64> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let blocks = len.div_ceil(ALIGN) * ALIGN;
        let written = (|| {
            let out = self.slice(blocks)?;
            let mut at = 0;
            for part in parts {
                out[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            out[len..].fill(0);
            match file.write_all_at(out, 0) {
                // A file system that takes the open but not the alignment: buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    set_direct(file, false)?;
                    file.write_all_at(&out[..len], 0)
                }
                other => other,
            }
        })();
        self.trim();
        written.map(|()| len as u64)
    }
}

/// The whole of `file`, at most `max` bytes (a longer file is `InvalidData`), read into a new
/// buffer at an aligned place: the bytes are `buf[at..]`. Read straight where they are used,
/// not through a buffer and a copy.
#[allow(unsafe_code)]
pub fn read(file: &File, max: u64) -> io::Result<(Vec<u8>, usize)> {
    let len = file.metadata()?.len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a file of {len} bytes, over the {max} expected at most"),
        ));
    }
    let len = len as usize;
    let blocks = len.div_ceil(ALIGN) * ALIGN;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(blocks + ALIGN)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the file"))?;
    let at = buf.as_ptr().align_offset(ALIGN);
    buf.resize(at, 0);
    let mut direct = true;
    while buf.len() < at + len {
        let done = buf.len() - at;
        // Whole blocks from an aligned place, as O_DIRECT wants; the last read ends short, at
        // the end of the file.
        let room = &mut buf.spare_capacity_mut()[..blocks - done];
        let read = rustix::io::pread(file, room, done as u64);
        let n = match read {
            Ok((filled, _)) => filled.len(),
            // A file system that takes the open but not the alignment: buffered.
            Err(e) if e == rustix::io::Errno::INVAL && direct => {
                set_direct(file, false)?;
                direct = false;
                continue;
            }
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let n = n.min(at + len - buf.len());
        // SAFETY: `pread` initialised the `n` bytes after the buffer's length (it returned
        // them as filled), which are within its capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok((buf, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_whole_and_the_file_is_cut_to_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.part");
        let mut buf = Aligned::new();
        let (head, body) = (
            vec![7u8; 40],
            (0..10_000u32).map(|i| i as u8).collect::<Vec<_>>(),
        );
        let file = create(&path).unwrap();
        let len = buf.write(&file, &[&head, &body]).unwrap();
        assert_eq!(len, 10_040);
        // Whole blocks, until the server cuts it.
        assert_eq!(file.metadata().unwrap().len(), 12_288);
        file.set_len(len).unwrap();
        assert!(create(&path).is_err(), "a part is never written twice");
        let (read, at) = read(&open_read(&path).unwrap(), 1 << 20).unwrap();
        assert_eq!(read.len() - at, 10_040);
        assert_eq!(
            (read.as_ptr() as usize + at) % ALIGN,
            0,
            "read to an aligned place"
        );
        assert!(read[at..at + 40] == head[..] && read[at + 40..] == body[..]);
        let refused = super::read(&open_read(&path).unwrap(), 10_039).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
    }
}
