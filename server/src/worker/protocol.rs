//! What the server and a render worker say to each other over the worker's socket (its
//! standard input, a Unix stream socket pair), and how it is framed.
//!
//! A frame is two little-endian `u32` lengths, a JSON header of that first length and a binary
//! blob of the second: the original going in, the encoded image coming out. Headers are small
//! and rare enough that JSON costs nothing measurable; blobs are never JSON. Both sides bound
//! what they read: a worker that a crafted file took over can make the server read at most
//! [`MAX_HEADER`] bytes of header and the caller's blob limit.
//!
//! Files go on a second socket, a Unix datagram socket pair whose worker end is the first
//! thing the server sends on the worker's socket ([`FileRole::Channel`]): one descriptor per
//! datagram ([`send_file`]), with a byte that says what it is for, sent before the job that
//! uses it. A reduced copy's bytes never pass through the
//! server: it opens the file and the worker reads or writes it.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use ross_config::{OutputFormat, OutputSettings};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::plugins::PluginLoadError;
use crate::render::Shape;

/// The largest header either side reads.
pub const MAX_HEADER: u32 = 1 << 20;

/// What a worker is told once, before it loads anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSettings {
    /// `limits.max_source_pixels`: checked from the header before decoding.
    pub max_source_pixels: u64,
    /// `limits.worker_memory_bytes`: the worker's address space (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// The worker's share of `cache.decoded_bytes`: decoded originals it keeps for the next
    /// sizes of the same original.
    pub decoded_bytes: u64,
    /// Encoder settings.
    pub output: OutputSettings,
    /// The largest reduced original to make (0: none; see [`RenderJob::copy`]).
    #[serde(default)]
    pub max_copy_bytes: u64,
    /// Whether to sandbox itself: always in ross; off only for tests of the worker itself.
    pub sandbox: bool,
}

/// A plugin file for the worker to load: its private copy, and the name the operator knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginToLoad {
    /// The file in `plugins.dir`, for messages.
    pub file: PathBuf,
    /// The private copy to open.
    pub copy: PathBuf,
}

/// Server to worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// The first message: what to load and how to work.
    Init {
        /// Settings.
        settings: WorkerSettings,
        /// Plugins to load, each test-rendered once.
        plugins: Vec<PluginToLoad>,
    },
    /// Render one variant.
    Render {
        /// What to render.
        job: RenderJob,
        /// What the blob is.
        sent: Sent,
    },
}

/// What a job's blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sent {
    /// Nothing: the server expects the worker to hold the original's pixels.
    Nothing,
    /// The original.
    Original,
    /// Nothing in the blob: a reduced original ([`crate::reduced::copy`]), made from the
    /// original's current version, whose file (read-only) comes on the file channel
    /// ([`FileRole::ReadCopy`]); the worker asks for the original if it does not serve the
    /// job, saying why if it is not a usable copy.
    Copy,
}

/// One variant to render.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderJob {
    /// The original's key: names the pixels kept for reuse.
    pub key: String,
    /// The key's source epoch the original was fetched in ([`crate::cache::Cache::source_epoch`]):
    /// pixels kept from another epoch are never used.
    pub epoch: u64,
    /// The mode.
    pub mode: String,
    /// Box asked for.
    pub width: u32,
    /// Box asked for.
    pub height: u32,
    /// Output format.
    pub format: OutputFormat,
    /// The sizes of modes asked for lately that the whitelist allows (none with the whitelist
    /// off): the original is decoded for the largest of them, so that the next sizes reuse the
    /// decode.
    pub shapes: Vec<Shape>,
    /// Whether a file for a reduced copy of the original comes on the file channel
    /// ([`FileRole::WriteCopy`], after the copy to read, if one is sent): a job that decodes
    /// the original writes its copy there and says so ([`Reply::Copy`]) before its render, if
    /// the sizes allow one. Only with [`Sent::Original`].
    #[serde(default)]
    pub copy: bool,
}

/// A stage of a render, reported as it begins so that a worker that dies is blamed right: a
/// crash while decoding is the file's (or the decoder's), while rendering the mode's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Decoding the original.
    Decode,
    /// The mode's plugin code: its decode need (where a job begins) and its render.
    Render,
    /// Encoding the output.
    Encode,
}

impl Stage {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Render => "render",
            Stage::Encode => "encode",
        }
    }
}

/// What loading one plugin file gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// The file in `plugins.dir`.
    pub file: PathBuf,
    /// Its modes, or why it was refused.
    pub result: Result<Vec<ModeSpec>, PluginLoadError>,
}

/// A mode a plugin provides, as the server shows and routes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeSpec {
    /// URL name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// The plugin ABI it was built against.
    pub abi_version: String,
    /// Whether it keeps transparency.
    pub takes_alpha: bool,
    /// Whether it shows the source fitted within its decode box rather than covering it.
    #[serde(default)]
    pub fits_within: bool,
}

/// Which sandbox layers a worker put itself in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// The seccomp filter is in force.
    pub seccomp: bool,
    /// The Landlock ABI in force (0: none, the kernel has no Landlock).
    pub landlock_abi: u8,
    /// Why a layer is missing, if one is.
    pub note: Option<String>,
}

/// Time spent per stage, in microseconds, for the server's stage timings.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Decoding, when the job decoded (not when it reused kept pixels).
    pub decode_us: Option<u64>,
    /// Reading a reduced original back, when the job was sent one.
    #[serde(default)]
    pub copy_us: Option<u64>,
    /// The mode.
    pub render_us: u64,
    /// Encoding.
    pub encode_us: u64,
}

/// A failure the worker answers with (the worker lives on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    /// HTTP status.
    pub status: u16,
    /// Error code, one of [`crate::error::ErrorCode`]'s.
    pub code: String,
    /// The sentence for the client.
    pub message: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// What went wrong inside, for the log.
    pub detail: Option<String>,
}

/// Worker to server.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Request::Init`]: each plugin's modes or refusal, and the sandbox in force.
    /// A worker that could not sandbox itself says why and exits.
    Ready {
        /// One report per plugin, in the order given.
        plugins: Vec<LoadReport>,
        /// The sandbox layers in force.
        sandbox: Result<SandboxReport, String>,
    },
    /// A stage of the current job begins.
    Stage(Stage),
    /// The worker holds no pixels of this original that serve the job: send it again with the
    /// original.
    NeedOriginal {
        /// Why the reduced copy sent is not a copy at all (cut short, damaged, over the
        /// limits): the server drops it. `None` for one that is only too small for the job.
        #[serde(default)]
        unusable: Option<String>,
    },
    /// A reduced copy of the job's original, made from its decode, was written to the file
    /// the job came with: its length; the job goes on.
    Copy {
        /// The copy's length (the file holds it in whole blocks, padded).
        bytes: u64,
    },
    /// The job's encoded image is the blob.
    Rendered {
        /// Time per stage.
        timings: Timings,
        /// Whether the worker kept the decoded pixels for the next sizes of this original.
        kept: bool,
        /// What the decode got past (only from the job that decoded).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<crate::imaging::DecodeWarning>,
    },
    /// The job failed.
    Failed(WireError),
}

fn frame_head(header: &[u8], blob: &[u8]) -> io::Result<[u8; 8]> {
    let len = |n: usize| {
        u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))
    };
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len(header.len())?.to_le_bytes());
    head[4..].copy_from_slice(&len(blob.len())?.to_le_bytes());
    Ok(head)
}

fn parse_head(head: [u8; 8], max_blob: usize) -> io::Result<(usize, usize)> {
    let header = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let blob = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    if header > MAX_HEADER || blob > max_blob {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {header} + {blob} bytes is over the limit"),
        ));
    }
    Ok((header as usize, blob))
}

fn decode_header<T: DeserializeOwned>(header: &[u8]) -> io::Result<T> {
    serde_json::from_slice(header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame (blocking; the worker's side).
pub fn write_frame(out: &mut impl Write, header: &impl Serialize, blob: &[u8]) -> io::Result<()> {
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    out.write_all(&frame_head(&header, blob)?)?;
    out.write_all(&header)?;
    out.write_all(blob)?;
    out.flush()
}

/// Reads one frame whose blob is at most `max_blob` bytes (blocking; the worker's side).
pub fn read_frame<T: DeserializeOwned>(
    input: &mut impl Read,
    max_blob: usize,
) -> io::Result<(T, Vec<u8>)> {
    let mut head = [0u8; 8];
    input.read_exact(&mut head)?;
    let (header_len, blob_len) = parse_head(head, max_blob)?;
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header)?;
    let mut blob = Vec::new();
    blob.try_reserve_exact(blob_len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "no memory for the frame"))?;
    // Read into the reserved room, not over zeros written first (a megabyte per original).
    let read = input.take(blob_len as u64).read_to_end(&mut blob)?;
    if read != blob_len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((decode_header(&header)?, blob))
}

/// Writes one frame (the server's side).
pub async fn send(
    out: &mut (impl AsyncWrite + Unpin),
    header: &impl Serialize,
    blob: &[u8],
) -> io::Result<()> {
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    // Head and header in one write (and a small blob with them): the worker wakes once.
    let mut first = Vec::with_capacity(8 + header.len() + blob.len().min(SMALL_BLOB));
    first.extend_from_slice(&frame_head(&header, blob)?);
    first.extend_from_slice(&header);
    if blob.len() <= SMALL_BLOB {
        first.extend_from_slice(blob);
        out.write_all(&first).await?;
    } else {
        out.write_all(&first).await?;
        out.write_all(blob).await?;
    }
    out.flush().await
}

/// A blob up to this size is copied into the frame's first write.
const SMALL_BLOB: usize = 64 << 10;

/// Reads one frame whose blob is at most `max_blob` bytes (the server's side).
pub async fn receive<T: DeserializeOwned>(
    input: &mut (impl AsyncRead + Unpin),
    max_blob: usize,
) -> io::Result<(T, Vec<u8>)> {
    let mut head = [0u8; 8];
    input.read_exact(&mut head).await?;
    let (header_len, blob_len) = parse_head(head, max_blob)?;
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header).await?;
    let mut blob = vec![0u8; blob_len];
    input.read_exact(&mut blob).await?;
    Ok((decode_header(&header)?, blob))
}

/// What a descriptor on the file channel is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The worker's end of the file channel, sent once on its socket before anything else.
    Channel,
    /// A reduced copy to read ([`Sent::Copy`]).
    ReadCopy,
    /// A new file to write a reduced copy into ([`RenderJob::copy`]).
    WriteCopy,
}

impl FileRole {
    fn byte(self) -> u8 {
        match self {
            FileRole::Channel => b'c',
            FileRole::ReadCopy => b'r',
            FileRole::WriteCopy => b'w',
        }
    }
}

/// Sends `file` for `role` on the file channel `channel` (or the channel itself on the worker's
/// socket) without waiting (the server's side): a worker that does not take its descriptors
/// fills the channel, and the send fails.
pub fn send_file(channel: impl AsFd, role: FileRole, file: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let files = [file];
    control.push(SendAncillaryMessage::ScmRights(&files));
    let sent = sendmsg(
        channel,
        &[io::IoSlice::new(&[role.byte()])],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    if sent != 1 {
        return Err(io::Error::other("the file channel took part of a datagram"));
    }
    Ok(())
}

/// Receives the descriptor for `role` from the file channel `channel` (the worker's side,
/// waiting; on the worker's socket, one byte of the stream, for the channel itself); anything
/// else breaks the protocol.
pub fn receive_file(channel: impl AsFd, role: FileRole) -> io::Result<OwnedFd> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = recvmsg(
        &channel,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut files: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            files.extend(fds);
        }
    }
    if got.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    match (byte[0] == role.byte(), files.len()) {
        (true, 1) => Ok(files.pop().expect("one")),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file channel sent {:?} with {} descriptors for {role:?}",
                byte[0] as char,
                files.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &Reply::NeedOriginal { unusable: None }, b"blob").unwrap();
        let (reply, blob): (Reply, Vec<u8>) = read_frame(&mut wire.as_slice(), 16).unwrap();
        assert!(matches!(reply, Reply::NeedOriginal { unusable: None }));
        assert_eq!(blob, b"blob");
        let refused = read_frame::<Reply>(&mut wire.as_slice(), 3).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn files_go_on_their_channel_one_per_datagram_with_their_role() {
        use std::io::{Read, Seek};
        use std::os::unix::net::UnixDatagram;
        let (server, worker) = UnixDatagram::pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"copy").unwrap();
        send_file(&server, FileRole::ReadCopy, file.as_fd()).unwrap();
        send_file(&server, FileRole::WriteCopy, file.as_fd()).unwrap();
        let mut got = std::fs::File::from(receive_file(&worker, FileRole::ReadCopy).unwrap());
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "copy");
        // Asked for the wrong role: the protocol is broken.
        let wrong = receive_file(&worker, FileRole::ReadCopy).unwrap_err();
        assert_eq!(wrong.kind(), io::ErrorKind::InvalidData);
        drop(worker);
        assert!(send_file(&server, FileRole::ReadCopy, file.as_fd()).is_err());
    }
}
