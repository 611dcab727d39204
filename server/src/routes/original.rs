//! `GET /{key}`: the original, unchanged, with the Content-Type its bytes show. It is streamed
//! a buffer at a time as the client reads, never held whole, and at most
//! `limits.max_original_streams` are sent at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use poem::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::respond::streamed_image_response;
use crate::error::{AppError, ErrorCode};
use crate::imaging::{sniff, DecodeError};
use crate::pipeline::CacheStatus;
use crate::request::SourceKey;
use crate::source::SourceError;
use crate::state::AppState;

/// Bytes read from the source per read, and so the most one response holds.
const CHUNK: usize = 64 * 1024;

/// Bytes that [`sniff`] needs to tell the format.
const SNIFF_BYTES: u64 = 12;

pub(super) async fn original(
    http: &Request,
    state: &Arc<AppState>,
    key: SourceKey,
) -> Result<Response, AppError> {
    if !state.settings.serve_originals {
        return Err(AppError::new(
            ErrorCode::OriginalsDisabled,
            "Originals are not served here; request a size: /{width}/{height}/{mode}/{key}.",
        ));
    }
    // Admitted before anything is read: a refusal costs no fetch.
    let permit = state
        .original_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::originals_busy())?;
    let limit = state.settings.limits.max_source_bytes;
    let mut opened = state.pipeline.source().open(&key, limit).await?;
    let mut head = Vec::with_capacity(SNIFF_BYTES as usize);
    (&mut opened.reader)
        .take(SNIFF_BYTES)
        .read_to_end(&mut head)
        .await
        .map_err(|source| SourceError::Io {
            key: key.to_string(),
            source,
        })?;
    let format = sniff(&head).ok_or(DecodeError::UnsupportedFormat)?;
    let body = OriginalBody {
        head: Bytes::from(head),
        left: opened.len.saturating_sub(SNIFF_BYTES.min(opened.len)),
        reader: opened.reader,
        buf: Vec::new(),
        _permit: permit,
    };
    let mut response = streamed_image_response(
        http,
        poem::Body::from(body.boxed()),
        opened.len,
        format.mime(),
        opened.modified.unwrap_or_else(SystemTime::now),
        CacheStatus::Miss,
        &state.settings.cache,
    );
    state
        .image_headers
        .add_original(response.headers_mut(), key.as_str());
    Ok(response)
}

/// An original's bytes, read from the source as the client takes them. It holds its stream's
/// permit until the last byte is sent or the client goes.
struct OriginalBody {
    /// The bytes read to sniff the format, sent first.
    head: Bytes,
    /// Bytes still to read from `reader`.
    left: u64,
    reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
    /// The buffer being filled (kept across a read that waits).
    buf: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl Body for OriginalBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if !this.head.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.head)))));
        }
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if this.buf.is_empty() {
            this.buf = vec![0; CHUNK.min(usize::try_from(this.left).unwrap_or(CHUNK))];
        }
        let mut read = ReadBuf::new(&mut this.buf);
        std::task::ready!(this.reader.as_mut().poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            // The source ended before the length it announced: the response cannot be
            // completed, and its connection is closed rather than the length faked.
            return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
        }
        let mut chunk = std::mem::take(&mut this.buf);
        chunk.truncate(n);
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.head.len() as u64 + self.left)
    }
}
