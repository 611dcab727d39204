//! The hits nginx serves itself, reported to ross: behind `deploy/nginx.conf`, nginx serves
//! a cached variant straight from `cache.dir` and logs it over syslog to `hit_log.listen`
//! (UDP or a Unix datagram socket), one line a hit: `{format} {uri}`. ross counts each as a
//! hit (so the hit ratio behind nginx is right) and notes its time for eviction (so the most
//! popular variants, which only nginx serves, are not the first evicted).
//!
//! One thread reads datagrams and hands the variants to a second through a bounded queue;
//! the second applies them in batches. A line the queue has no room for is dropped and
//! counted (`ross_hit_log_dropped_total`): a flood of lines costs hits not counted, never
//! memory or requests. A line that names no variant is counted as unreadable.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ross_config::{HitLogListen, OutputFormat, Size};

use crate::cache::VariantKey;
use crate::request::SourceKey;
use crate::state::AppState;
use crate::telemetry::{Count, Metrics};

/// Lines waiting to be applied, at most.
const QUEUE: usize = 65_536;

/// A batch is applied once this many lines wait, or after [`BATCH_EVERY`].
const BATCH: usize = 4096;
const BATCH_EVERY: Duration = Duration::from_millis(250);

/// How long a read waits before the reader looks whether the server still runs.
const READ_WAIT: Duration = Duration::from_secs(1);

/// The kernel's receive buffer asked for: a burst waits there rather than being lost.
const SOCKET_BUFFER: usize = 4 << 20;

/// A socket datagrams are read from.
enum Socket {
    Udp(std::net::UdpSocket),
    Unix(std::os::unix::net::UnixDatagram),
}

impl Socket {
    fn bind(listen: &HitLogListen) -> std::io::Result<Socket> {
        let socket = match listen {
            HitLogListen::Udp(addr) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(*addr),
                    socket2::Type::DGRAM,
                    None,
                )?;
                let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
                socket.bind(&(*addr).into())?;
                Socket::Udp(socket.into())
            }
            HitLogListen::Unix(path) => {
                // A socket left by a process that died is in the way.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                let socket = std::os::unix::net::UnixDatagram::bind(path)?;
                // nginx's workers run as another user.
                std::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )?;
                let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER);
                Socket::Unix(socket)
            }
        };
        match &socket {
            Socket::Udp(s) => s.set_read_timeout(Some(READ_WAIT))?,
            Socket::Unix(s) => s.set_read_timeout(Some(READ_WAIT))?,
        }
        Ok(socket)
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Socket::Udp(s) => s.recv(buf),
            Socket::Unix(s) => s.recv(buf),
        }
    }
}

/// Starts taking hits at `hit_log.listen`, if set. Fails if the address cannot be bound.
pub fn start(state: &Arc<AppState>) -> std::io::Result<()> {
    let Some(listen) = state.settings.hit_log.clone() else {
        return Ok(());
    };
    let socket = Socket::bind(&listen).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("hit_log.listen: cannot listen on {listen}: {e}"),
        )
    })?;
    let (queue, lines) = sync_channel(QUEUE);
    let reader = Arc::downgrade(state);
    std::thread::Builder::new()
        .name("ross-hit-log".into())
        .spawn(move || read(socket, queue, reader))?;
    let applier = Arc::downgrade(state);
    std::thread::Builder::new()
        .name("ross-hit-apply".into())
        .spawn(move || apply(lines, applier))?;
    tracing::info!(listen = %listen, "taking nginx's hits");
    Ok(())
}

fn read(socket: Socket, queue: SyncSender<VariantKey>, state: Weak<AppState>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if state.strong_count() == 0 {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the hit log");
                std::thread::sleep(READ_WAIT);
                continue;
            }
        };
        let Some(state) = state.upgrade() else { return };
        let limits = &state.settings.limits;
        if !take(&buf[..n], limits, &queue, &state.metrics) {
            return;
        }
    }
}

/// Queues the hits of one datagram, counting what is dropped or unreadable; false once the
/// applier is gone.
fn take(
    datagram: &[u8],
    limits: &ross_config::Limits,
    queue: &SyncSender<VariantKey>,
    metrics: &Metrics,
) -> bool {
    for line in datagram.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match parse(line, limits.max_width, limits.max_height) {
            Some(variant) => match queue.try_send(variant) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => metrics.count(Count::HitLogDropped),
                Err(TrySendError::Disconnected(_)) => return false,
            },
            None => metrics.count(Count::HitLogUnreadable),
        }
    }
    true
}

fn apply(lines: Receiver<VariantKey>, state: Weak<AppState>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut since = Instant::now();
    loop {
        let next = lines.recv_timeout(BATCH_EVERY);
        let closed = matches!(next, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
        if let Ok(variant) = next {
            batch.push(variant);
        }
        if batch.len() >= BATCH || since.elapsed() >= BATCH_EVERY || closed {
            if !batch.is_empty() {
                let Some(state) = state.upgrade() else { return };
                let n = batch.len() as u64;
                state.metrics.add(Count::Hit, n);
                state.metrics.add(Count::NginxHit, n);
                for variant in batch.drain(..) {
                    state.cache.note_hit(&variant);
                }
            }
            since = Instant::now();
        }
        if closed {
            return;
        }
    }
}

/// The variant a hit log line names: a syslog message (`<pri>timestamp [host] tag: `, then
/// `{format} {uri}`), with nginx's escapes (`\xHH`) in the URI.
pub fn parse(line: &[u8], max_width: u32, max_height: u32) -> Option<VariantKey> {
    let text = std::str::from_utf8(line).ok()?;
    let message = if text.starts_with('<') {
        text.split_once(": ")?.1
    } else {
        text
    };
    let (format, uri) = message.trim_end().split_once(' ')?;
    let format: OutputFormat = format.parse().ok()?;
    let uri = unescape(uri)?;
    let mut parts = uri.strip_prefix('/')?.splitn(4, '/');
    let (w, h, mode, key) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let side = |t: &str, max: u32| t.parse::<u32>().ok().filter(|n| (1..=max).contains(n));
    let size = Size {
        width: side(w, max_width)?,
        height: side(h, max_height)?,
    };
    if !crate::request::is_mode_word(mode) {
        return None;
    }
    Some(VariantKey {
        format,
        size,
        mode: mode.to_owned(),
        key: SourceKey::new(key).ok()?,
    })
}

/// Undoes nginx's log escaping: `\xHH` for `"`, `\` and bytes outside printable ASCII.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = text.get(i + 2..i + 4)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_queue_are_dropped_and_counted() {
        let metrics = Metrics::new();
        let limits = ross_config::Settings::default().limits;
        let (queue, lines) = sync_channel(2);
        let datagram =
            b"jpeg /1/1/crop/a.jpg\njpeg /2/1/crop/a.jpg\njpeg /3/1/crop/a.jpg\nnonsense\n";
        assert!(take(datagram, &limits, &queue, &metrics));
        let counts = metrics.counts();
        assert_eq!((counts.hit_log_dropped, counts.hit_log_unreadable), (1, 1));
        assert_eq!(lines.try_iter().count(), 2);
        drop(lines);
        assert!(!take(b"jpeg /1/1/crop/a.jpg", &limits, &queue, &metrics));
    }

    #[test]
    fn nginx_syslog_lines_name_their_variant() {
        let v = parse(
            b"<190>Dec  5 14:00:00 ross: webp /300/200/crop/photos/caf\\xC3\\xA9 \\x22x\\x22.jpg",
            2000,
            2000,
        )
        .unwrap();
        assert_eq!(v.format, OutputFormat::Webp);
        assert_eq!((v.size.width, v.size.height), (300, 200));
        assert_eq!(v.mode, "crop");
        assert_eq!(v.key.as_str(), "photos/café \"x\".jpg");
        // With a host name, and without syslog framing.
        assert!(parse(
            b"<190>Dec  5 14:00:00 web-1 ross: jpeg /72/72/crop/a.jpg",
            2000,
            2000
        )
        .is_some());
        assert!(parse(b"jpeg /72/72/crop/a.jpg", 2000, 2000).is_some());
        for bad in [
            &b"<190>Dec  5 14:00:00 ross: gif /72/72/crop/a.jpg"[..],
            b"jpeg /72/72/crop/",
            b"jpeg /72/72/crop/../x.jpg",
            b"jpeg /0/72/crop/a.jpg",
            b"jpeg /72/72/Crop!/a.jpg",
            b"jpeg /72/72/crop/a\\x0A.jpg",
            b"jpeg /72/72/crop/a\\xZZ.jpg",
            b"<190>no colon here",
        ] {
            assert!(
                parse(bad, 2000, 2000).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
