//! A deadline on I/O that stops making progress: armed when an operation first returns
//! `Pending`, cleared when one completes, an error once it has waited the whole limit. It
//! bounds how long a peer that stopped reading, or a file or store that stopped answering, can
//! hold a connection, a file or a buffer, without limiting how long a slow but moving transfer
//! may take.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The deadline of one stream of operations (one direction of one connection or file).
#[derive(Debug)]
pub struct Stall {
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    /// What the error says when the limit passes.
    what: &'static str,
}

impl Stall {
    /// A deadline of `limit`; `what` names it in the error (e.g. the setting that sets it).
    pub fn new(limit: Duration, what: &'static str) -> Stall {
        Stall {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            what,
        }
    }

    /// Passes `poll` through, or turns a wait longer than the limit into `TimedOut`.
    pub fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            let until = Instant::now() + self.limit;
            self.sleep.as_mut().reset(until);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no progress within {} ms ({})",
                    self.limit.as_millis(),
                    self.what
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A reader whose every read has the deadline.
pub struct StallReader<R> {
    inner: R,
    stall: Stall,
}

impl<R> StallReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, stall: Stall) -> StallReader<R> {
        StallReader { inner, stall }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StallReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.stall.watch(cx, read)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_read_that_never_returns_times_out_and_a_moving_one_does_not() {
        // One end of a pipe nobody writes to: reads wait forever.
        let (silent, _writer) = tokio::io::duplex(64);
        let mut reader = StallReader::new(silent, Stall::new(Duration::from_millis(200), "test"));
        let mut buf = [0u8; 8];
        let err = reader.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // A writer that sends a byte every 50 ms, ten times: longer than the limit in all,
        // never silent for as long.
        let (moving, mut writer) = tokio::io::duplex(64);
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tokio::io::AsyncWriteExt::write_all(&mut writer, b"x")
                    .await
                    .unwrap();
            }
        });
        let mut reader = StallReader::new(moving, Stall::new(Duration::from_millis(200), "test"));
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 10);
    }
}
