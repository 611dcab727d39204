use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{http_get, Ross};
use crate::util::corpus;

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A memory figure of `/proc/{pid}/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// A media folder with a 6000x4500 (27 megapixel) quality-95 JPEG, `big.jpg`, and a small
/// photo, `small.jpg`.
fn big_media() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let wood = image::open(corpus().join("photos/Wood.jpg")).unwrap();
    let big = wood.resize_exact(6000, 4500, image::imageops::FilterType::Triangle);
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(dir.path().join("big.jpg")).unwrap());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&big.into_rgb8())
        .unwrap();
    drop(out);
    std::fs::copy(
        corpus().join("photos/Dune.jpg"),
        dir.path().join("small.jpg"),
    )
    .unwrap();
    dir
}

/// Regression: every miss read its whole original before waiting for a render slot, so 100
/// concurrent variants of a large JPEG took gigabytes. Now 150 distinct misses on a 27 MP
/// JPEG, all at once with the default limits, stay under 300 MiB of peak memory; every answer
/// is 200 or 503 (with `Retry-After`), none hangs, and cache hits are answered within a second
/// all along.
#[test]
fn a_burst_of_large_misses_stays_within_the_memory_budget() {
    let media = big_media();
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__SOURCE__ROOT", media.path().to_str().unwrap())],
    );
    let port = ross.port;
    assert_eq!(
        http_get(port, "/300/300/crop/small.jpg", Duration::from_secs(30))
            .unwrap()
            .0,
        200
    );
    let hits = Arc::new(Mutex::new(Vec::new()));
    let hitter = {
        let hits = hits.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(8);
            while Instant::now() < end {
                let t = Instant::now();
                let (status, _) =
                    http_get(port, "/300/300/crop/small.jpg", Duration::from_secs(10)).unwrap();
                hits.lock().unwrap().push((t.elapsed(), status));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..150)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/{}/{}/resize/big.jpg", 1000 + i, 900 + i);
                crate::process::http_request(port, "GET", &path, &[], b"", Duration::from_secs(60))
                    .map(|(status, body)| {
                        (
                            status,
                            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                        )
                    })
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for c in clients {
        let (status, body) = c.join().unwrap().expect("a request hung or failed");
        assert!(status == 200 || status == 503, "{status}: {body}");
        *statuses.entry(status).or_insert(0) += 1;
    }
    let burst = started.elapsed();
    hitter.join().unwrap();
    let peak = peak_rss_mib(ross.child.id());
    let hits = hits.lock().unwrap();
    let worst = hits.iter().map(|(d, _)| *d).max().unwrap();
    assert!(hits.iter().all(|(_, s)| *s == 200), "{hits:?}");
    assert!(
        worst < Duration::from_secs(1),
        "a cache hit took {worst:?} during the burst"
    );
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    println!(
        "burst of 150 misses on a 27 MP JPEG: {statuses:?} in {:.1} s, peak RSS {peak:.0} MiB, \
         slowest of {} cache hits meanwhile {} ms",
        burst.as_secs_f64(),
        hits.len(),
        worst.as_millis()
    );
    assert!(
        peak <= 300.0,
        "peak RSS {peak:.0} MiB over the 300 MiB budget"
    );
}

/// Regression: an original (`GET /{key}`) was read whole per client and not admitted, so 40
/// clients asking for a 47 MB original and never reading pinned 2 GB. Now it is streamed a
/// buffer at a time: 40 such clients of a 40 MB original hold a few MiB, one more is refused
/// (503, `Retry-After`) at `limits.max_original_streams`, the stalled connections are closed
/// at `server.send_timeout_ms` and their places freed, and a client that reads gets every byte.
#[test]
fn originals_are_streamed_admitted_and_let_go_by_clients_that_never_read() {
    use std::io::{Read, Write};
    const LEN: usize = 40 << 20;
    let media = tempfile::tempdir().unwrap();
    // JPEG magic, then bytes that do not repeat in any short period.
    let mut original = vec![0xFF, 0xD8, 0xFF, 0xE0];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while original.len() < LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        original.extend_from_slice(&x.to_le_bytes());
    }
    original.truncate(LEN);
    std::fs::write(media.path().join("big.jpg"), &original).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SOURCE__ROOT", media.path().to_str().unwrap()),
            ("ROSS__LIMITS__MAX_ORIGINAL_STREAMS", "40"),
            ("ROSS__SERVER__SEND_TIMEOUT_MS", "4000"),
        ],
    );
    let port = ross.port;
    let pid = ross.child.id();
    let before = status_mib(pid, "VmRSS:");
    let request = b"GET /big.jpg HTTP/1.1\r\nHost: x\r\n\r\n";
    let stalled: Vec<_> = (0..40)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(request).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let held = status_mib(pid, "VmRSS:");
    let (status, body) =
        crate::process::http_request(port, "GET", "/big.jpg", &[], b"", Duration::from_secs(10))
            .unwrap();
    assert_eq!(
        (status, error_code_of_body(&body).as_str()),
        (503, "overloaded")
    );
    println!(
        "40 clients not reading a 40 MiB original: RSS {before:.0} -> {held:.0} MiB, peak {:.0}",
        peak_rss_mib(pid)
    );
    assert!(
        held - before < 64.0,
        "RSS grew from {before:.0} to {held:.0} MiB holding 40 stalled originals"
    );
    // Past the send timeout every stalled connection has been closed: each client gets what
    // the kernel buffered, then the end, well short of the whole original.
    std::thread::sleep(Duration::from_secs(4));
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0usize;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a stalled connection stayed open: {e}"),
            }
        }
        assert!(got < LEN, "a stalled client got the whole original");
    }
    let (status, body) =
        crate::process::http_request(port, "GET", "/big.jpg", &[], b"", Duration::from_secs(30))
            .unwrap();
    assert_eq!(status, 200);
    assert!(body == original, "the original came back changed");
}

/// The SPEC's error code in a JSON error body.
fn error_code_of_body(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)));
    json["error"]["code"].as_str().unwrap().to_owned()
}

/// Sends `data` on a new connection and reads until the server closes it or `wait` passes:
/// what came back, and whether the server closed the connection.
fn exchange(port: u16, data: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(data).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// The JSON error body of a raw response.
fn error_code(raw: &[u8]) -> String {
    let body_at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |p| p + 4);
    error_code_of_body(&raw[body_at..])
}

/// Regression: slow-header clients (slowloris) were never closed, and idle keep-alive
/// connections piled up until the file descriptors ran out. Now 150 clients that never finish
/// their headers do not slow others down and are answered 408 and closed at the header
/// deadline; so is a client trickling a byte a second; an idle keep-alive connection is
/// closed after the idle timeout, while one that keeps asking is kept.
#[test]
fn slow_and_idle_connections_are_closed_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SERVER__HEADER_TIMEOUT_MS", "1500"),
            ("ROSS__SERVER__KEEP_ALIVE_TIMEOUT_MS", "1000"),
        ],
    );
    let port = ross.port;
    let slow: Vec<_> = (0..150)
        .map(|_| {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    assert_eq!(
        http_get(port, "/health", Duration::from_secs(5)).unwrap().0,
        200
    );
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?} beside slow clients",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for mut s in slow {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut raw = Vec::new();
        if s.read_to_end(&mut raw).is_ok() {
            assert!(
                raw.starts_with(b"HTTP/1.1 408 "),
                "{}",
                String::from_utf8_lossy(&raw)
            );
            assert_eq!(error_code(&raw), "request-timeout");
            closed += 1;
        }
    }
    assert_eq!(
        closed, 150,
        "slow clients still open after the header deadline"
    );

    // One byte every 300 ms: it never goes silent, and is still closed at the deadline.
    let trickle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let started = Instant::now();
        for byte in b"GET /health HTTP/1.1\r\nHost: a-very-long-host-name-indeed\r\n".iter() {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            let mut got = [0u8; 256];
            if let Ok(n) = s.read(&mut got) {
                return (
                    String::from_utf8_lossy(&got[..n]).into_owned(),
                    started.elapsed(),
                );
            }
        }
        (String::new(), started.elapsed())
    });
    let (answer, after) = trickle.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "{answer:?} after {after:?}"
    );
    assert!(
        after < Duration::from_millis(2500),
        "closed only after {after:?}"
    );

    // Keep-alive: requests 600 ms apart share one connection; silence closes it after 1 s.
    let (raw, closed) = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut answers = 0;
        for _ in 0..3 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = [0u8; 4096];
            let n = s.read(&mut got).unwrap();
            answers += usize::from(got[..n].starts_with(b"HTTP/1.1 200"));
            std::thread::sleep(Duration::from_millis(600));
        }
        let idle = Instant::now();
        let mut rest = Vec::new();
        let closed = s.read_to_end(&mut rest).is_ok();
        assert!(
            idle.elapsed() < Duration::from_millis(1500),
            "idle for {:?}",
            idle.elapsed()
        );
        (answers, closed)
    };
    assert_eq!((raw, closed), (3, true));
}

/// Regression: errors from the HTTP layer had empty or plain-text bodies, and 405 no `Allow`.
/// Every one now carries the SPEC's JSON error.
#[test]
fn http_layer_errors_carry_the_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(dir.path(), &[("ROSS__SERVER__MAX_HEADER_BYTES", "4096")]);
    let port = ross.port;
    let wait = Duration::from_secs(5);
    let (raw, _) = exchange(port, b"NOT HTTP AT ALL\r\n\r\n", wait);
    assert!(
        raw.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(error_code(&raw), "bad-request");
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(8000)
    );
    let (raw, closed) = exchange(port, big.as_bytes(), wait);
    assert!(
        raw.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(error_code(&raw), "headers-too-large");
    assert!(closed);
    // A URL counts against `server.max_header_bytes` first: 431, as the README says (414
    // only past hyper's 65,534-byte URL limit, when the head limit is set above it).
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let (raw, _) = exchange(port, long.as_bytes(), wait);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    assert_eq!(error_code(&raw), "headers-too-large");
    let (raw, _) = exchange(
        port,
        b"POST /300/300/crop/photos/Dune.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        wait,
    );
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 405 "), "{text}");
    assert!(text.contains("\r\nallow: get, head\r\n"), "{text}");
    assert_eq!(error_code(&raw), "method-not-allowed");
    // The server serves on after all of them.
    assert_eq!(http_get(port, "/health", wait).unwrap().0, 200);
    // The connection layer's own answers are counted like every response (regression: they
    // never reached the observer, so /metrics and the admin page missed them).
    let (_, metrics) = http_get(port, "/metrics", wait).unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        "\nross_errors_total{status=\"400\"} 1\n",
        "\nross_errors_total{status=\"431\"} 2\n",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}

/// An admin request whose body trickles in is answered 408 at the header deadline and its
/// connection closed, instead of holding it forever; a body over 64 KiB is 413.
#[test]
fn admin_bodies_are_bounded_in_time_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(dir.path(), &[("ROSS__SERVER__HEADER_TIMEOUT_MS", "1000")]);
    let auth = format!("Authorization: Bearer {}", crate::process::ADMIN_TOKEN);
    let slow = format!(
        "PUT /admin/api/whitelist HTTP/1.1\r\nHost: x\r\n{auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"enabled\""
    );
    let started = Instant::now();
    let (raw, closed) = exchange(ross.port, slow.as_bytes(), Duration::from_secs(10));
    let took = started.elapsed();
    assert!(closed, "the connection stayed open");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert!(
        raw.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(error_code(&raw), "request-timeout");

    let big = format!("{{\"enabled\": true, \"pad\": \"{}\"}}", "x".repeat(70_000));
    let (status, body) = crate::process::http_request(
        ross.port,
        "PUT",
        "/admin/api/whitelist",
        &[
            (
                "Authorization",
                &format!("Bearer {}", crate::process::ADMIN_TOKEN),
            ),
            ("Content-Type", "application/json"),
        ],
        big.as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        (status, error_code_of_body(&body).as_str()),
        (413, "body-too-large")
    );
}

/// At the bound with every connection busy, a waiting client looks again every 50 ms for one
/// gone idle: it is served as soon as the busy one has answered and sits kept alive, not when
/// that one's keep-alive runs out (30 s here).
#[test]
fn a_waiting_client_gets_the_first_connection_to_go_idle() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SERVER__MAX_CONNECTIONS", "1"),
            ("ROSS__SERVER__HEADER_TIMEOUT_MS", "30000"),
            ("ROSS__SERVER__KEEP_ALIVE_TIMEOUT_MS", "30000"),
        ],
    );
    let port = ross.port;
    // The one connection is busy: its request head has begun.
    let mut busy = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    busy.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let waiting = std::thread::spawn(move || {
        let got = http_get(port, "/health", Duration::from_secs(20));
        (got.map(|(status, _)| status).ok(), Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "served while the only connection was busy"
    );
    // The busy one ends its request and is answered; its connection stays open, idle.
    busy.write_all(b"\r\n").unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 1024];
    let n = busy.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    let (status, served_at) = waiting.join().unwrap();
    assert_eq!(status, Some(200));
    let waited = served_at.duration_since(idle_since);
    assert!(
        waited < Duration::from_secs(2),
        "served {waited:?} after a connection went idle"
    );
    println!("a waiting client was served {waited:?} after a connection went idle");
}

/// Regression: about 20,000 idle sockets exhausted the file descriptors and "accept failed"
/// filled the log; and 520 silent connections made a normal request wait 9 s. At
/// `server.max_connections` ross closes the connection idle the longest (kept alive, or
/// silent since it opened) for a new client; only when every connection is busy (here, each
/// in the middle of a request head) does a new client wait for one to end.
#[test]
fn at_the_bound_idle_connections_make_room_and_busy_ones_are_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SERVER__MAX_CONNECTIONS", "8"),
            ("ROSS__SERVER__HEADER_TIMEOUT_MS", "1000"),
        ],
    );
    let port = ross.port;
    let busy: Vec<_> = (0..8)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::io::Write::write_all(&mut s, b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, _) = http_get(port, "/health", Duration::from_secs(10)).unwrap();
    let waited = t.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(700),
        "served after {waited:?}: the bound did not hold"
    );
    drop(busy);
    std::thread::sleep(Duration::from_millis(200));
    let silent: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, _) = http_get(port, "/health", Duration::from_secs(10)).unwrap();
    let waited = t.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited < Duration::from_millis(500),
        "served after {waited:?}: a silent connection kept the slot"
    );
    drop(silent);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(!log.contains("accept failed"), "{log}");
}

/// Stage timers and counters reach a statsd server (a UDP socket this test opens) as
/// `<prefix>.<stage>` in ms; `/metrics` has them as Prometheus text; a request id is taken
/// from the client or generated, and echoed; every request is one access log line.
#[test]
fn telemetry_reaches_statsd_prometheus_and_the_log() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let statsd_port = udp.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__STATSD__HOST", "127.0.0.1"),
            ("ROSS__STATSD__PORT", &statsd_port),
            ("ROSS__STATSD__PREFIX", "rosstest"),
        ],
    );
    let port = ross.port;
    let (raw, _) = exchange(
        port,
        b"GET /120/80/crop/photos/Dune.jpg HTTP/1.1\r\nHost: x\r\nX-Request-Id: test-req-1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let head = String::from_utf8_lossy(&raw[..raw.len().min(600)]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nx-request-id: test-req-1\r\n"), "{head}");
    let (raw, _) = exchange(
        port,
        b"GET /120/80/nosuchmode/photos/Dune.jpg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let generated = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id generated: {head}"))
        .trim()
        .to_owned();
    let wanted = [
        "rosstest.cache_check:",
        "rosstest.fetch:",
        "rosstest.decode:",
        "rosstest.render:",
        "rosstest.encode:",
        "rosstest.cache_write:",
        "rosstest.requests.200:1|c",
        "rosstest.errors.404:1|c",
        "rosstest.misses:1|c",
    ];
    let mut seen = String::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) && !wanted.iter().all(|w| seen.contains(w)) {
        let mut packet = [0u8; 2048];
        if let Ok(n) = udp.recv(&mut packet) {
            seen.push_str(&String::from_utf8_lossy(&packet[..n]));
            seen.push('\n');
        }
    }
    for w in wanted {
        assert!(seen.contains(w), "{w} not received by statsd: {seen}");
    }
    assert!(
        seen.contains("rosstest.fetch:") && seen.contains("|ms"),
        "{seen}"
    );
    let (status, metrics) = http_get(port, "/metrics", Duration::from_secs(5)).unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert_eq!(status, 200);
    for needle in [
        "# TYPE ross_stage_ms histogram",
        "ross_stage_ms_bucket{stage=\"fetch\",le=\"+Inf\"} 1",
        "ross_stage_ms_count{stage=\"fetch\"} 1",
        "ross_request_ms_bucket{le=\"+Inf\"} ",
        "ross_requests_total{status=\"200\"} ",
        "ross_errors_total{status=\"404\"} 1",
        "ross_misses_total 1",
        "ross_renders_in_flight 0",
        "ross_cache_entries 1",
        "ross_plugin_load_failures_total 0",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} not in /metrics:\n{metrics}"
        );
    }
    // Lines are written by a thread of their own: wait for the two this test looks for.
    crate::process::log_once_it_holds(dir.path(), "test-req-1");
    let log = crate::process::log_once_it_holds(dir.path(), &generated);
    let access: Vec<&str> = log.lines().filter(|l| l.contains("access")).collect();
    assert!(
        access.iter().any(|l| l.contains("test-req-1")
            && l.contains("status=200")
            && l.contains("cache=MISS")),
        "{log}"
    );
    // A refusal is one line, with its code and the reason the client was given.
    let refused: Vec<&str> = log.lines().filter(|l| l.contains(&generated)).collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert!(
        refused[0].contains("status=404")
            && refused[0].contains("code=unknown-mode")
            && refused[0].contains(r#"reason=No mode named "nosuchmode" is loaded."#)
            && !refused[0].contains("error="),
        "{log}"
    );
}

/// A stand-in for Sentry's ingest: an HTTP endpoint on loopback that keeps every body it is
/// sent and answers `{}`.
pub(crate) fn sentry_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    keep.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (port, got)
}

/// Every 5xx reaches Sentry tagged with the request's key, size, mode and plugin version, and
/// so does a plugin that is refused (a local endpoint stands in for Sentry).
#[test]
fn failures_reach_sentry_with_their_context() {
    let (sentry_port, got) = sentry_sink();
    let plugins = crate::util::plugin_folder(&[
        crate::util::built("crop"),
        crate::util::fixture_plugin("panicking_plugin"),
    ]);
    std::fs::write(plugins.path().join("libjunk.so"), b"not a library").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!("http://public@127.0.0.1:{sentry_port}/1");
    let ross = Ross::start(
        dir.path(),
        &[
            ("ROSS__SENTRY__DSN", &dsn),
            ("ROSS__SENTRY__ENVIRONMENT", "test"),
            ("ROSS__PLUGINS__DIR", plugins.path().to_str().unwrap()),
        ],
    );
    let (status, _) = http_get(
        ross.port,
        "/100/90/panic/photos/Dune.jpg",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(status, 500);
    let started = Instant::now();
    let wanted = |events: &[String]| {
        let failure = events.iter().any(|e| {
            e.contains("photos/Dune.jpg")
                && e.contains("\"mode\":\"panic\"")
                && e.contains("100x90")
                && e.contains("plugin_version")
                && e.contains("\"environment\":\"test\"")
        });
        let refused = events
            .iter()
            .any(|e| e.contains("plugin refused") && e.contains("libjunk.so"));
        failure && refused
    };
    while !wanted(&got.lock().unwrap()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Sentry did not get both events: {:?}",
            got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression: `limits.max_width = max_height = 100000` was accepted and one request then
/// aborted the process on a 30 GB allocation. Sides are now bounded by what the encoders can
/// write (65,500), and the output by `limits.max_output_pixels`: the largest sides allowed
/// still make a request that is a 400, and the server serves on.
#[tokio::test]
async fn huge_sizes_within_the_side_limits_are_refused_not_fatal() {
    let server = crate::util::TestServer::builder()
        .set("ROSS__LIMITS__MAX_WIDTH", "65500")
        .set("ROSS__LIMITS__MAX_HEIGHT", "65500")
        .start()
        .await;
    let r = server.get("/65500/65500/crop/photos/Dune.jpg").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid-size");
    assert!(
        r.text().contains("limits.max_output_pixels"),
        "{}",
        r.text()
    );
    let r = server.get("/4000/4000/crop/photos/Dune.jpg").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.image().dimensions(), (4000, 4000));
    let too_much = ross_config::Settings::from_parts(
        None,
        None,
        [(
            "ROSS__LIMITS__MAX_OUTPUT_PIXELS".to_owned(),
            "10000000000".to_owned(),
        )],
    )
    .unwrap_err();
    assert_eq!(too_much.0[0].key, "limits.max_output_pixels");
}

/// Regression: a failure was not remembered, so every request for a costly bad file (a
/// crafted progressive JPEG cost 1.8 s of CPU a render) paid for it again. A source that
/// failed to decode is answered from a short-lived negative cache, for every size and mode,
/// until it changes.
#[tokio::test]
async fn a_bad_source_costs_its_decode_once() {
    let media = tempfile::tempdir().unwrap();
    std::fs::copy(
        corpus().join("bad/truncated.jpg"),
        media.path().join("bad.jpg"),
    )
    .unwrap();
    let server = crate::util::TestServer::builder()
        .media(media.path())
        .start()
        .await;
    for (i, mode) in ["crop", "resize", "resizecomp", "crop", "resize"]
        .iter()
        .enumerate()
    {
        let r = server
            .get(&format!("/{}/300/{mode}/bad.jpg", 300 + i))
            .await;
        assert_eq!(
            (r.status, r.json()["error"]["code"].as_str()),
            (415, Some("undecodable-image"))
        );
    }
    let renders = server.state.metrics.counts().renders;
    assert_eq!(renders, 1, "the bad file was decoded {renders} times");
    // Read once: later requests look at its modification time, they do not read it.
    let fetches = server.state.metrics.counts().fetches;
    assert_eq!(fetches, 1, "the bad file was read {fetches} times");
    // Replaced by a good file (a new version), it is served at once.
    std::fs::copy(
        corpus().join("photos/Dune.jpg"),
        media.path().join("bad.jpg"),
    )
    .unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(media.path().join("bad.jpg"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(server.get("/300/300/crop/bad.jpg").await.status, 200);
}

/// SIGTERM under load: requests in flight finish (200), new connections are refused, the
/// cache index is flushed and the process exits 0.
#[test]
fn sigterm_under_load_finishes_in_flight_requests_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut ross = Ross::start(dir.path(), &[("ROSS__LIMITS__MAX_CONCURRENT_RENDERS", "1")]);
    let port = ross.port;
    let clients: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let path = format!("/{}/700/crop/webp/symbolic-d.webp", 700 + i);
                http_get(port, &path, Duration::from_secs(30))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let pid = ross.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after SIGTERM"
    );
    for c in clients {
        let (status, body) = c.join().unwrap().expect("an in-flight request was cut");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let code = ross.child.wait().unwrap();
    assert_eq!(code.code(), Some(0), "exit status {code}");
    // The renders are indexed after a restart: the index was flushed on the way out.
    drop(ross);
    let again = Ross::start(dir.path(), &[]);
    let stats = again.settled();
    assert_eq!(stats["cache"]["entries"], 6, "{stats}");
}

/// Regression: a PNG whose ICC profile inflated to hundreds of megabytes was inflated whole
/// (a 1 MB file added 340 MB of peak memory). ross does no colour management: the profile is
/// skipped unread, and the picture renders exactly as it does without one.
#[test]
fn an_icc_bomb_png_costs_no_memory() {
    use image::ImageEncoder;
    let media = tempfile::tempdir().unwrap();
    let photo = image::open(corpus().join("photos/Dune.jpg"))
        .unwrap()
        .resize_exact(500, 400, image::imageops::FilterType::Triangle)
        .into_rgb8();
    let write = |name: &str, icc: Option<Vec<u8>>| {
        let mut file = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut file);
        if let Some(icc) = icc {
            encoder.set_icc_profile(icc).unwrap();
        }
        encoder
            .write_image(&photo, 500, 400, image::ExtendedColorType::Rgb8)
            .unwrap();
        std::fs::write(media.path().join(name), &file).unwrap();
        file.len()
    };
    // 300 MiB of zeros: a profile that compresses to a few hundred kB, under the decoder's
    // own allocation limit, so that only skipping it keeps the memory.
    let bomb_len = write("bomb.png", Some(vec![0u8; 300 << 20]));
    write("plain.png", None);
    assert!(bomb_len < 2 << 20, "{bomb_len}");
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(
        dir.path(),
        &[("ROSS__SOURCE__ROOT", media.path().to_str().unwrap())],
    );
    let wait = Duration::from_secs(30);
    let (status, bomb) = http_get(ross.port, "/300/300/crop/bomb.png", wait).unwrap();
    assert_eq!(status, 200);
    let (_, plain) = http_get(ross.port, "/300/300/crop/plain.png", wait).unwrap();
    assert!(bomb == plain, "the profile changed the render");
    let peak = peak_rss_mib(ross.child.id());
    println!("a {bomb_len}-byte PNG with a 300 MiB ICC profile: peak RSS {peak:.0} MiB");
    assert!(
        peak < 150.0,
        "peak RSS {peak:.0} MiB: the profile was inflated"
    );
}

/// Allocation failure never aborts the process: with its address space limited to 1 GiB
/// (as on a small machine) and `limits.max_source_pixels` raised to let a 400-megapixel PNG
/// through, showing it at 10000x10000 needs it whole, a 1.6 GB buffer. That request gets 503
/// `out-of-memory` with `Retry-After`; the process lives on and serves the next request.
/// (Shown at 300x300, the same PNG is decoded in rows, and renders.)
#[test]
fn an_allocation_that_fails_is_a_503_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start_with(
        dir.path(),
        &[
            ("ROSS__LIMITS__MAX_SOURCE_PIXELS", "400000000"),
            ("ROSS__LIMITS__MAX_WIDTH", "10000"),
            ("ROSS__LIMITS__MAX_HEIGHT", "10000"),
            ("ROSS__LIMITS__MAX_OUTPUT_PIXELS", "100000000"),
        ],
        Some(1 << 30),
    );
    let wait = Duration::from_secs(60);
    let get =
        |path: &str| crate::process::http_request(ross.port, "GET", path, &[], b"", wait).unwrap();
    // Shown at 300x300, the 400-megapixel PNG is decoded in rows into a few megabytes.
    let (status, _) = get("/300/300/resize/bad/bomb_20000x20000.png");
    assert_eq!(status, 200);
    // Shown at 10000x10000 it is needed whole: 1.6 GB of pixels, more than the worker holds.
    let (status, body) = get("/10000/10000/resize/bad/bomb_20000x20000.png");
    assert_eq!(
        (status, error_code_of_body(&body).as_str()),
        (503, "out-of-memory")
    );
    let (status, _) = http_get(ross.port, "/300/300/crop/photos/Dune.jpg", wait).unwrap();
    assert_eq!(status, 200);
    let mut child = ross;
    assert!(child.child.try_wait().unwrap().is_none(), "ross exited");
}

/// `log.access = false` keeps the lines of refused and failed requests only; lines are
/// written by a thread of their own and reach the log within moments.
#[test]
fn access_lines_can_be_limited_to_refusals_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let ross = Ross::start(dir.path(), &[("ROSS__LOG__ACCESS", "false")]);
    let ok = b"GET /120/80/crop/photos/Dune.jpg HTTP/1.1\r\nHost: x\r\nX-Request-Id: served-1\r\nConnection: close\r\n\r\n";
    let (raw, _) = exchange(ross.port, ok, Duration::from_secs(10));
    assert!(raw.starts_with(b"HTTP/1.1 200"));
    let refused = b"GET /120/80/nosuchmode/photos/Dune.jpg HTTP/1.1\r\nHost: x\r\nX-Request-Id: refused-1\r\nConnection: close\r\n\r\n";
    let (raw, _) = exchange(ross.port, refused, Duration::from_secs(10));
    assert!(raw.starts_with(b"HTTP/1.1 404"));
    let log = crate::process::log_once_it_holds(dir.path(), "refused-1");
    assert!(
        log.lines()
            .any(|l| l.contains("refused-1") && l.contains("status=404")),
        "{log}"
    );
    assert!(!log.contains("served-1"), "{log}");
}
