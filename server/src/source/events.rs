//! S3 event notifications, as S3 sends them (to SQS, or through SNS), read into the changes
//! they name: which key of the source was created (replaced) with which ETag, or removed.
//!
//! What is accepted: S3's own JSON (`{"Records": [...]}`, event version 2.x); the same inside
//! an SNS notification (`{"Type": "Notification", "Message": "<S3's JSON>"}`); S3's test
//! event, sent when notifications are configured (no records: nothing to do). Keys arrive
//! form-URL-encoded (`red+flower.jpg`, `shoes%2Fa.jpg`) and are decoded. Records of another
//! bucket, or of keys outside `source.prefix`, are not the source's and are skipped.
//! Delivery is at least once and in any order: a record read twice costs nothing (the key's
//! renders are then of the version it names), and for one key only the latest record of a
//! batch (by `sequencer`, when S3 gives one) is acted on.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One key's change, read from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEvent {
    /// The source key (without `source.prefix`).
    pub key: String,
    /// The object's ETag now, unquoted; `None` when it was removed (or the event says not).
    pub version: Option<String>,
}

/// What a body held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The changes, one per key.
    pub events: Vec<SourceEvent>,
    /// Records of another bucket or outside the prefix, or of another kind of event.
    pub skipped: usize,
    /// An SNS subscription asks to be confirmed at this URL (ross does not fetch it).
    pub confirm: Option<String>,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not an event S3 or SNS sends.
    #[error("not an S3 event notification: {0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    /// SNS: `Notification`, `SubscriptionConfirmation`...
    #[serde(rename = "Type")]
    kind: Option<String>,
    /// SNS: the S3 event, as a string.
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
    /// S3's test event.
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_version: Option<String>,
    event_name: Option<String>,
    s3: Option<S3Part>,
}

#[derive(Deserialize)]
struct S3Part {
    bucket: Option<Bucket>,
    object: Option<Object>,
}

#[derive(Deserialize)]
struct Bucket {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    key: Option<String>,
    e_tag: Option<String>,
    sequencer: Option<String>,
}

/// Reads `body`: the changes it names to keys of `bucket` under `prefix`.
pub fn parse(body: &[u8], bucket: &str, prefix: &str) -> Result<Parsed, EventError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| EventError::Shape(e.to_string()))?;
    match envelope.kind.as_deref() {
        Some("Notification") => {
            let message = envelope
                .message
                .ok_or_else(|| EventError::Shape("an SNS notification without Message".into()))?;
            return parse(message.as_bytes(), bucket, prefix);
        }
        Some("SubscriptionConfirmation") => {
            return Ok(Parsed {
                confirm: envelope.subscribe_url,
                ..Parsed::default()
            });
        }
        Some("UnsubscribeConfirmation") => return Ok(Parsed::default()),
        _ => {}
    }
    let Some(records) = envelope.records else {
        if envelope.event.as_deref() == Some("s3:TestEvent") {
            return Ok(Parsed::default());
        }
        return Err(EventError::Shape("no Records".into()));
    };
    let mut latest: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut skipped = 0;
    for (at, record) in records.into_iter().enumerate() {
        match read_record(record, bucket, prefix) {
            Some((key, version, sequencer)) => {
                // Ordered by sequencer (hex, compared right-padded), else by position.
                let order = sequencer.map_or_else(|| format!("~{at:020}"), |s| format!("{s:0<32}"));
                match latest.get(&key) {
                    Some((seen, _)) if *seen > order => {}
                    _ => {
                        latest.insert(key, (order, version));
                    }
                }
            }
            None => skipped += 1,
        }
    }
    Ok(Parsed {
        events: latest
            .into_iter()
            .map(|(key, (_, version))| SourceEvent { key, version })
            .collect(),
        skipped,
        confirm: None,
    })
}

/// A record's key, version and sequencer, if it is a change of `bucket` under `prefix`.
fn read_record(
    record: Record,
    bucket: &str,
    prefix: &str,
) -> Option<(String, Option<String>, Option<String>)> {
    let major = record
        .event_version
        .as_deref()
        .and_then(|v| v.split('.').next());
    if major.is_some_and(|m| m != "2") {
        return None;
    }
    let name = record.event_name?;
    let name = name.strip_prefix("s3:").unwrap_or(&name);
    let removed = if name.starts_with("ObjectRemoved:") {
        true
    } else if name.starts_with("ObjectCreated:") || name.starts_with("ObjectRestore:Completed") {
        false
    } else {
        return None;
    };
    let s3 = record.s3?;
    if s3.bucket?.name? != bucket {
        return None;
    }
    let object = s3.object?;
    let key = decode_key(&object.key?)?;
    let key = key.strip_prefix(prefix)?.to_owned();
    if key.is_empty() {
        return None;
    }
    let version = if removed {
        None
    } else {
        object
            .e_tag
            .filter(|t| !t.is_empty())
            .map(|t| super::s3::etag(&t))
    };
    Some((key, version, object.sequencer))
}

/// A key as S3 events give it: form-URL-encoded (`+` a space, `%XX` a byte).
fn decode_key(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, key: &str, etag: Option<&str>, sequencer: Option<&str>) -> String {
        let etag = etag.map_or(String::new(), |t| format!(r#","eTag":"{t}""#));
        let sequencer = sequencer.map_or(String::new(), |s| format!(r#","sequencer":"{s}""#));
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"{name}",
            "s3":{{"bucket":{{"name":"media"}},"object":{{"key":"{key}","size":10{etag}{sequencer}}}}}}}"#
        )
    }

    fn body(records: &[String]) -> String {
        format!(r#"{{"Records":[{}]}}"#, records.join(","))
    }

    #[test]
    fn reads_created_and_removed_keys_decoded() {
        let parsed = parse(
            body(&[
                record(
                    "ObjectCreated:Put",
                    "shoes/red+flower.jpg",
                    Some("abc"),
                    None,
                ),
                record("ObjectRemoved:Delete", "shoes%2Fold.jpg", None, None),
                record(
                    "ObjectCreated:Copy",
                    "caf%C3%A9.jpg",
                    Some(r#"\"q\""#),
                    None,
                ),
            ])
            .as_bytes(),
            "media",
            "",
        )
        .unwrap();
        assert_eq!(
            parsed.events,
            vec![
                SourceEvent {
                    key: "café.jpg".into(),
                    version: Some("q".into())
                },
                SourceEvent {
                    key: "shoes/old.jpg".into(),
                    version: None
                },
                SourceEvent {
                    key: "shoes/red flower.jpg".into(),
                    version: Some("abc".into())
                },
            ]
        );
        assert_eq!(parsed.skipped, 0);
    }

    #[test]
    fn other_buckets_prefixes_and_kinds_are_skipped() {
        let other = record("ObjectCreated:Put", "a.jpg", Some("e"), None).replace("media", "x");
        let parsed = parse(
            body(&[
                other,
                record("ObjectCreated:Put", "else/a.jpg", Some("e"), None),
                record("ObjectTagging:Put", "img/a.jpg", Some("e"), None),
                record("ObjectCreated:Put", "img/b.jpg", Some("e"), None),
            ])
            .as_bytes(),
            "media",
            "img/",
        )
        .unwrap();
        assert_eq!(parsed.skipped, 3);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].key, "b.jpg");
    }

    #[test]
    fn the_latest_record_of_a_key_wins() {
        // By sequencer when given, whatever the order they came in.
        let parsed = parse(
            body(&[
                record(
                    "ObjectRemoved:Delete",
                    "a.jpg",
                    None,
                    Some("0055AED6DCD90281E6"),
                ),
                record(
                    "ObjectCreated:Put",
                    "a.jpg",
                    Some("new"),
                    Some("0055AED6DCD90281E7"),
                ),
                record(
                    "ObjectCreated:Put",
                    "a.jpg",
                    Some("old"),
                    Some("0055AED6DCD9028"),
                ),
            ])
            .as_bytes(),
            "media",
            "",
        )
        .unwrap();
        assert_eq!(parsed.events[0].version.as_deref(), Some("new"));
        // Else by position.
        let parsed = parse(
            body(&[
                record("ObjectCreated:Put", "a.jpg", Some("old"), None),
                record("ObjectRemoved:Delete", "a.jpg", None, None),
            ])
            .as_bytes(),
            "media",
            "",
        )
        .unwrap();
        assert_eq!(parsed.events[0].version, None);
    }

    #[test]
    fn sns_envelopes_test_events_and_confirmations() {
        let inner = body(&[record("ObjectCreated:Put", "a.jpg", Some("e"), None)]);
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "1", "Message": inner});
        let parsed = parse(sns.to_string().as_bytes(), "media", "").unwrap();
        assert_eq!(parsed.events.len(), 1);
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"media"}"#;
        assert_eq!(
            parse(test.as_bytes(), "media", "").unwrap(),
            Parsed::default()
        );
        let confirm = serde_json::json!({
            "Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example/confirm"
        });
        assert_eq!(
            parse(confirm.to_string().as_bytes(), "media", "")
                .unwrap()
                .confirm
                .as_deref(),
            Some("https://sns.example/confirm")
        );
        assert!(parse(b"{}", "media", "").is_err());
        assert!(parse(b"not json", "media", "").is_err());
    }
}
