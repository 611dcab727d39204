//! A served image's headers, `ETag`, `Last-Modified` and `Content-Length`, made once per file: a variant held
//! in memory is served many times, and formatting them on every hit was a measurable part of
//! its cost.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use poem::http::HeaderValue;

/// The headers of one image file.
#[derive(Debug, Clone)]
pub struct FileHeaders {
    /// The file's modification time, in whole seconds (what HTTP dates can say).
    pub modified_secs: u64,
    /// `"<mtime hex>-<length hex>"`, the form nginx uses, so an ETag does not change when the
    /// same cached file is served by nginx instead of ross.
    pub etag: HeaderValue,
    /// The modification time as an HTTP date.
    pub last_modified: HeaderValue,
    /// The length in bytes.
    pub content_length: HeaderValue,
}

impl FileHeaders {
    /// The headers of a file of `len` bytes modified at `modified`.
    pub fn new(modified: SystemTime, len: u64) -> FileHeaders {
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        FileHeaders {
            modified_secs: secs,
            etag: HeaderValue::from_maybe_shared(Bytes::from(format!("\"{secs:x}-{len:x}\"")))
                .expect("hex digits and quotes"),
            last_modified: HeaderValue::from_maybe_shared(Bytes::from(date)).expect("an HTTP date"),
            content_length: HeaderValue::from(len),
        }
    }

    /// The ETag without its quotes' meaning: the text a client sends back.
    pub fn etag_str(&self) -> &str {
        self.etag.to_str().expect("ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_nginx_form() {
        let modified = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        let v = FileHeaders::new(modified, 4096);
        assert_eq!(v.modified_secs, 1_700_000_000);
        assert_eq!(v.etag_str(), "\"6553f100-1000\"");
        assert_eq!(v.last_modified, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(v.content_length, "4096");
    }
}
