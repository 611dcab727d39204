use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::process::{http_get, Ross};
use crate::util::corpus;

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
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
