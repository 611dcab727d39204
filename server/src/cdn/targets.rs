//! The requests each kind of CDN takes a purge as, and sending them. The shapes are plain
//! `http::Request`s, built apart from sending so that tests can check them against each
//! API's documentation.

use std::time::Duration;

use poem::http::{header, Method, Request};
use ross_config::CdnTarget;

/// The longest header of tags sent to Varnish in one request (its default `http_req_hdr_len`
/// is 8 KiB).
const VARNISH_HEADER_BYTES: usize = 4_096;

/// Fastly takes at most this many keys in one batch purge.
const FASTLY_KEYS: usize = 256;

/// How long one request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `tags` in groups of at most `count`, whose joined length (with one separator between) is at
/// most `bytes`.
fn chunks(tags: &[String], count: usize, bytes: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut len = 0;
    for tag in tags {
        let fits = out
            .last()
            .is_some_and(|c| c.len() < count && len + 1 + tag.len() <= bytes);
        if fits {
            len += 1 + tag.len();
            out.last_mut().expect("checked").push(tag.clone());
        } else {
            len = tag.len();
            out.push(vec![tag.clone()]);
        }
    }
    out
}

/// The HTTP requests that purge `tags` at `target` (not CloudFront, which takes paths through
/// the AWS SDK).
pub fn http_requests(target: &CdnTarget, tags: &[String]) -> Vec<Request<Vec<u8>>> {
    match target {
        CdnTarget::Varnish { url, header } => chunks(tags, usize::MAX, VARNISH_HEADER_BYTES)
            .into_iter()
            .map(|group| {
                Request::builder()
                    .method(Method::from_bytes(b"PURGE").expect("a valid method"))
                    .uri(url)
                    .header(header.as_str(), group.join(" "))
                    .body(Vec::new())
                    .expect("a valid request")
            })
            .collect(),
        CdnTarget::Fastly {
            service_id,
            token,
            soft,
            api,
        } => chunks(tags, FASTLY_KEYS, usize::MAX)
            .into_iter()
            .map(|group| {
                let mut request = Request::builder()
                    .method(Method::POST)
                    .uri(format!(
                        "{}/service/{service_id}/purge",
                        api.trim_end_matches('/')
                    ))
                    .header("Fastly-Key", token)
                    .header(header::ACCEPT, "application/json")
                    .header(header::CONTENT_TYPE, "application/json");
                if *soft {
                    request = request.header("Fastly-Soft-Purge", "1");
                }
                let body = serde_json::json!({ "surrogate_keys": group });
                request
                    .body(serde_json::to_vec(&body).expect("JSON"))
                    .expect("a valid request")
            })
            .collect(),
        CdnTarget::Cloudflare {
            zone_id,
            token,
            tags_per_request,
            api,
        } => chunks(tags, *tags_per_request as usize, usize::MAX)
            .into_iter()
            .map(|group| {
                let body = serde_json::json!({ "tags": group });
                Request::builder()
                    .method(Method::POST)
                    .uri(format!(
                        "{}/zones/{zone_id}/purge_cache",
                        api.trim_end_matches('/')
                    ))
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body).expect("JSON"))
                    .expect("a valid request")
            })
            .collect(),
        CdnTarget::CloudFront { .. } => Vec::new(),
    }
}

/// Whether `target` accepted a purge, from its answer: a 2xx, and for Cloudflare
/// `"success": true` in the body.
pub fn accepted(target: &CdnTarget, status: u16, body: &str) -> Result<(), String> {
    if !(200..300).contains(&status) {
        let body: String = body.chars().take(300).collect();
        return Err(format!("answered {status}: {body}"));
    }
    if let CdnTarget::Cloudflare { .. } = target {
        let ok = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["success"].as_bool())
            .unwrap_or(false);
        if !ok {
            let body: String = body.chars().take(300).collect();
            return Err(format!("answered {status} without success: {body}"));
        }
    }
    Ok(())
}

/// An HTTP client for the CDNs' APIs (a thread's: blocking).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        // Varnish takes purges as PURGE.
        .allow_non_standard_methods(true)
        .build()
        .into()
}

/// Sends `tags` to `target` over HTTP; `Ok` once every request was accepted.
pub fn send_http(agent: &ureq::Agent, target: &CdnTarget, tags: &[String]) -> Result<(), String> {
    for request in http_requests(target, tags) {
        let uri = request.uri().to_string();
        let mut response = agent.run(request).map_err(|e| format!("{uri}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        accepted(target, status, &body).map_err(|e| format!("{uri} {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k-photos/{i:04}.jpg")).collect()
    }

    #[test]
    fn varnish_gets_purge_with_the_tags_in_its_header() {
        let target = CdnTarget::Varnish {
            url: "http://127.0.0.1:6081/".into(),
            header: "xkey-purge".into(),
        };
        let requests = http_requests(&target, &["ross".into(), "m-crop".into()]);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method().as_str(), "PURGE");
        assert_eq!(requests[0].uri(), "http://127.0.0.1:6081/");
        assert_eq!(requests[0].headers()["xkey-purge"], "ross m-crop");
        // A long list is split to keep the header under Varnish's limit.
        let many = http_requests(&target, &tags(1_000));
        assert!(many.len() > 1);
        assert!(many
            .iter()
            .all(|r| r.headers()["xkey-purge"].len() <= VARNISH_HEADER_BYTES));
        let sent: usize = many
            .iter()
            .map(|r| {
                r.headers()["xkey-purge"]
                    .to_str()
                    .unwrap()
                    .split(' ')
                    .count()
            })
            .sum();
        assert_eq!(sent, 1_000);
    }

    #[test]
    fn fastly_gets_batches_of_256_keys_with_its_token() {
        let target = CdnTarget::Fastly {
            service_id: "SU1Z0isxPaozGVKXdv0eY".into(),
            token: "t0ken".into(),
            soft: true,
            api: "https://api.fastly.com".into(),
        };
        let requests = http_requests(&target, &tags(300));
        assert_eq!(requests.len(), 2);
        let first = &requests[0];
        assert_eq!(first.method(), Method::POST);
        assert_eq!(
            first.uri(),
            "https://api.fastly.com/service/SU1Z0isxPaozGVKXdv0eY/purge"
        );
        assert_eq!(first.headers()["fastly-key"], "t0ken");
        assert_eq!(first.headers()["fastly-soft-purge"], "1");
        let body: serde_json::Value = serde_json::from_slice(first.body()).unwrap();
        assert_eq!(body["surrogate_keys"].as_array().unwrap().len(), 256);
        assert_eq!(body["surrogate_keys"][0], "k-photos/0000.jpg");
    }

    #[test]
    fn cloudflare_gets_tags_per_request_and_must_say_success() {
        let target = CdnTarget::Cloudflare {
            zone_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            token: "t0ken".into(),
            tags_per_request: 30,
            api: "https://api.cloudflare.com/client/v4/".into(),
        };
        let requests = http_requests(&target, &tags(31));
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].uri(),
            "https://api.cloudflare.com/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/purge_cache"
        );
        assert_eq!(requests[0].headers()["authorization"], "Bearer t0ken");
        let body: serde_json::Value = serde_json::from_slice(requests[1].body()).unwrap();
        assert_eq!(body["tags"], serde_json::json!(["k-photos/0030.jpg"]));
        assert!(accepted(&target, 200, r#"{"success":true,"errors":[]}"#).is_ok());
        assert!(accepted(&target, 200, r#"{"success":false}"#).is_err());
        assert!(accepted(&target, 429, "").is_err());
    }
}

/// CloudFront: `CreateInvalidation` through the AWS SDK.
pub mod cloudfront {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    use ross_config::CdnTarget;

    /// Invalidates `paths` of the distribution `target` names; `reference` makes a retry of
    /// the same batch the same invalidation (CloudFront's `CallerReference`). Blocking (runs a
    /// runtime of its own: called from the CDN thread).
    pub fn invalidate(target: &CdnTarget, paths: &[String], reference: &str) -> Result<(), String> {
        let CdnTarget::CloudFront {
            distribution_id,
            region,
            endpoint,
        } = target
        else {
            return Err("not a CloudFront distribution".into());
        };
        if paths.is_empty() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for CloudFront: {e}"))?;
        runtime.block_on(async {
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https();
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                .region(Region::new(region.clone()))
                .load()
                .await;
            let mut config = aws_sdk_cloudfront::config::Builder::from(&shared).timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(super::TIMEOUT)
                    .build(),
            );
            if let Some(endpoint) = endpoint {
                config = config.endpoint_url(endpoint);
            }
            let client = aws_sdk_cloudfront::Client::from_conf(config.build());
            let batch = InvalidationBatch::builder()
                .caller_reference(reference)
                .paths(
                    Paths::builder()
                        .quantity(paths.len() as i32)
                        .set_items(Some(paths.to_vec()))
                        .build()
                        .map_err(|e| e.to_string())?,
                )
                .build()
                .map_err(|e| e.to_string())?;
            client
                .create_invalidation()
                .distribution_id(distribution_id)
                .invalidation_batch(batch)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "CreateInvalidation of {distribution_id}: {}",
                        aws_sdk_cloudfront::error::DisplayErrorContext(&e)
                    )
                })
        })
    }
}
