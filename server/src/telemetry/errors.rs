//! The error responses most recently sent, for the dashboard: a short list, not a metric.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use admin_api::RecentError;

use super::latency::lock;

/// Recent errors kept for the dashboard.
const RECENT_ERRORS: usize = 12;

/// The last 12 distinct error responses (same status, code, method and path: one entry,
/// counted), each with when it was last sent.
#[derive(Debug, Default)]
pub struct RecentErrors(Mutex<VecDeque<(SystemTime, RecentError)>>);

impl RecentErrors {
    /// An error response sent at `at` (`error.at` is set from it, and `error.count` counts: a
    /// repeat of an error in the list moves it to the front, counted).
    pub fn note(&self, at: SystemTime, mut error: RecentError) {
        let mut recent = lock(&self.0);
        let same = |(_, e): &(SystemTime, RecentError)| {
            (e.status, &e.code, &e.method, &e.path)
                == (error.status, &error.code, &error.method, &error.path)
        };
        error.at = httpdate::fmt_http_date(at);
        error.count = 1;
        if let Some(i) = recent.iter().position(same) {
            let (_, earlier) = recent.remove(i).expect("found");
            error.count += earlier.count;
        } else if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back((at, error));
    }

    /// The most recent error responses, newest first, with when each was last sent (its `ago`
    /// is left to the reader).
    pub fn list(&self) -> Vec<(SystemTime, RecentError)> {
        lock(&self.0).iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_errors_and_counts_repeats() {
        let s = RecentErrors::default();
        let error = |path: String| RecentError {
            status: 404,
            code: "not-found".into(),
            reason: "Nothing is served at this path.".into(),
            method: "GET".into(),
            path,
            request_id: "id".into(),
            ..RecentError::default()
        };
        for i in 0..30u16 {
            s.note(SystemTime::now(), error(format!("/{i}")));
        }
        let recent = s.list();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!((recent[0].1.path.as_str(), recent[0].1.count), ("/29", 1));
        assert!(recent[0].1.at.ends_with("GMT"));
        s.note(SystemTime::now(), error("/25".into()));
        s.note(SystemTime::now(), error("/25".into()));
        let recent = s.list();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!((recent[0].1.path.as_str(), recent[0].1.count), ("/25", 3));
        assert_eq!(recent[1].1.path, "/29");
    }
}
