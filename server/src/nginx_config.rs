//! `ross nginx-config`: the nginx site for the effective settings, so that nginx and ross
//! cannot disagree. nginx serves cache hits itself (from `cache.dir`, with the headers ross
//! sends: `Cache-Control` of `cache.max_age`, `Vary`, the surrogate keys, CORS) and passes
//! everything else to ross (`server.listen`); it tells ross of each hit over syslog
//! (`hit_log.listen`); it lets only `admin.networks` reach `/admin`, `/metrics` and `/ready`.
//!
//! The format a hit is looked up in is ross's choice for the request's `Accept` header
//! ([`crate::negotiate`]), which an nginx `map` cannot compute in general (it weighs quality
//! values). So the map holds ross's own answers for the headers real browsers send, and
//! decides a header without parameters (no `;`, so every quality is 1) by the formats it
//! names, as ross does; any other header is passed to ross, which chooses and answers (from
//! its cache). nginx therefore never serves a format ross would not.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use poem::http::{header::ACCEPT, HeaderMap, HeaderValue};
use ross_config::{HitLogListen, OutputFormat, Settings};

use crate::negotiate::negotiate;
use crate::surrogate::PLAIN_KEY_MAX;

/// `Accept` headers of real browsers (image requests, `<img>` and CSS), and of common clients,
/// whose format nginx decides from ross's answer.
pub const KNOWN_ACCEPT: &[&str] = &[
    // Chromium and Chrome 85+, Edge, Opera, Samsung Internet.
    "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    // Chrome before AVIF (32-84).
    "image/webp,image/apng,image/*,*/*;q=0.8",
    "image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    // Firefox 93+ (AVIF), 65-92 (WebP), and older.
    "image/avif,image/webp,*/*",
    "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "image/webp,*/*",
    "image/png,image/*;q=0.8,*/*;q=0.5",
    // Safari 17+, 16, 14-15, and before WebP.
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "image/webp,image/avif,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
    "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5",
    "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5",
    // Navigations (an image opened in a tab): Chrome, Firefox.
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    // curl, libraries, crawlers.
    "*/*",
    "image/*",
];

/// What `ross nginx-config` is asked for besides the settings.
#[derive(Debug, Clone)]
pub struct Site {
    /// nginx's `listen` (a port, or an address and port).
    pub listen: String,
    /// nginx's `server_name`.
    pub server_name: String,
    /// The access log nginx writes besides the hit log (locations that log hits name it
    /// again, as their `access_log` replaces the http block's).
    pub access_log: String,
}

impl Default for Site {
    fn default() -> Site {
        Site {
            listen: "80".into(),
            server_name: "_".into(),
            access_log: "/var/log/nginx/access.log".into(),
        }
    }
}

/// The address nginx reaches ross at: `server.listen`, with an unspecified address made
/// loopback.
fn upstream(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// `text` as an nginx string: quoted, with `"` escaped. nginx keeps any other backslash as
/// it is (a regular expression's escapes pass through); it has no escape for `$` (a
/// variable). [`site`] refuses values with a `$` or a backslash of their own.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\\\""))
}

/// `text` as a regular expression that matches it literally.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ross's answer to `accept` among `formats`.
fn choice(accept: &str, formats: &[OutputFormat]) -> OutputFormat {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(accept) {
        headers.insert(ACCEPT, value);
    }
    negotiate(&headers, formats)
}

/// The `map` of `$http_accept` to the format nginx looks a hit up in (`ask`: ross chooses).
fn accept_map(formats: &[OutputFormat], out: &mut String) {
    out.push_str(
        "# The format of a hit, as ross chooses it for the request's Accept header: ross's own\n\
         # answers for real browsers' headers; a header without parameters (every quality 1) by\n\
         # the first of output.formats it names exactly; any other header goes to ross (\"ask\"),\n\
         # which chooses and answers from its cache.\n",
    );
    out.push_str("map $http_accept $ross_accept {\n");
    if formats.len() < 2 {
        out.push_str("    # One format (output.formats = [\"jpeg\"]): every client gets it.\n");
        out.push_str("    default jpeg;\n}\n\n");
        return;
    }
    out.push_str("    default ask;\n");
    let _ = writeln!(out, "    \"\" {};", choice("", formats).as_str());
    // Whole headers as regular expressions (nginx's hash of exact strings would need a
    // larger map_hash_bucket_size for headers this long), compared without case as ross does.
    for accept in KNOWN_ACCEPT {
        let _ = writeln!(
            out,
            "    {} {};",
            quoted(&format!("~*^{}$", regex_literal(accept))),
            choice(accept, formats).as_str()
        );
    }
    for format in formats.iter().filter(|f| **f != OutputFormat::Jpeg) {
        let _ = writeln!(
            out,
            "    \"~*^[^;]*(^|,)\\s*image\\s*/\\s*{}\\s*(,|$)[^;]*$\" {};",
            format.as_str(),
            format.as_str()
        );
    }
    out.push_str("    \"~^[^;]*$\" jpeg;\n}\n\n");
}

/// Where a sized URL's hit is looked up: the format, or `ask` (ross answers) for a key
/// nginx cannot tag as ross does.
fn target_map(tagging: bool, out: &mut String) {
    if !tagging {
        out.push_str("map $ross_accept $ross_target {\n    default $ross_accept;\n}\n\n");
        return;
    }
    let _ = writeln!(
        out,
        "# The surrogate keys of a sized URL, as ross tags its renders (see ross.example.toml,\n\
         # output.surrogate_keys). A key nginx cannot tag (other characters than letters, digits\n\
         # and ._/-, or longer than {PLAIN_KEY_MAX} bytes: ross tags it by a hash) goes to ross."
    );
    let _ = writeln!(
        out,
        "map $uri $ross_tags {{\n    \"~^/(?<w>[0-9]+)/(?<h>[0-9]+)/(?<m>[a-z0-9_-]+)/(?<k>[A-Za-z0-9._/-]{{1,{PLAIN_KEY_MAX}}})$\" \"ross k-$k m-$m s-${{w}}x$h\";\n    default \"\";\n}}\n"
    );
    out.push_str("map $ross_tags $ross_target {\n    \"\" ask;\n    default $ross_accept;\n}\n\n");
}

/// The headers nginx adds to a hit: those ross sends with the same file.
fn hit_headers(settings: &Settings, varies: bool, out: &mut String) {
    let control = crate::routes::respond::cache_control(&settings.cache);
    let _ = writeln!(
        out,
        "        add_header Cache-Control \"{}\" always;",
        control.to_str().expect("ASCII")
    );
    out.push_str("        add_header X-Cache HIT always;\n");
    out.push_str("        add_header X-Content-Type-Options nosniff always;\n");
    if varies {
        out.push_str("        add_header Vary Accept always;\n");
    }
    for header in &settings.output.surrogate_keys {
        let tags = if header.separator() == " " {
            "$ross_tags".to_owned()
        } else {
            "$ross_tags_commas".to_owned()
        };
        let _ = writeln!(
            out,
            "        add_header {} {} always;",
            header.as_str(),
            tags
        );
    }
    if let Some(origin) = &settings.output.cors_origin {
        let _ = writeln!(
            out,
            "        add_header Access-Control-Allow-Origin {} always;",
            quoted(origin)
        );
    }
}

/// The site config for `settings`, as `ross nginx-config` prints it. `cache_dir` is
/// `cache.dir` made absolute. Refused: a value nginx cannot take as text (a `$`, a line
/// break, a `;` or `{` outside quotes).
pub fn site(settings: &Settings, site: &Site, cache_dir: &Path) -> Result<String, String> {
    let cache_text = cache_dir.display().to_string();
    if cache_text.contains(['$', '\\', '"', '\n', '\r']) {
        return Err(format!(
            "cache.dir {cache_text:?}: nginx cannot name a folder with a $, a backslash, a \
             quote or a line break"
        ));
    }
    for (what, value) in [
        ("--listen", &site.listen),
        ("--server-name", &site.server_name),
        ("--access-log", &site.access_log),
    ] {
        if value.is_empty() || value.contains(['$', ';', '{', '}', '"', '\'', '\n', '#']) {
            return Err(format!(
                "{what} {value:?} is not a value nginx takes as it is"
            ));
        }
    }
    let formats = &settings.output.formats;
    let varies = formats.len() > 1;
    let tagging = !settings.output.surrogate_keys.is_empty();
    let upstream = upstream(settings.server.listen);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# ross behind nginx, written by `ross nginx-config` for these settings: cache.dir\n\
         # {cache}, server.listen {listen}, cache.max_age {age} s, output.formats [{formats}].\n\
         # Write it again after changing any of them. Include it inside nginx's http {{ }} block\n\
         # (Debian: /etc/nginx/sites-enabled/ross).\n\
         #\n\
         # Hits are files in ross's cache, laid out as {{format}}/{{width}}/{{height}}/{{mode}}/{{key}}:\n\
         # nginx sends them itself with the headers ross would send. Everything else (misses,\n\
         # originals, errors, /health) goes to ross and comes back unchanged; /admin, /metrics\n\
         # and /ready only from admin.networks.\n",
        cache = cache_dir.display(),
        listen = settings.server.listen,
        age = settings.cache.max_age.as_secs(),
        formats = formats
            .iter()
            .map(|f| format!("{:?}", f.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if settings.hit_log.is_some() {
        let _ = writeln!(
            out,
            "# Each hit is told to ross (hit_log.listen) in one short line, \"{{format}} {{uri}}\",\n\
             # so that its hit ratio and eviction order see the hits nginx serves. Nothing waits\n\
             # for it: a line ross does not take is lost, never a request.\n\
             log_format ross_hit '$ross_target $uri';\n"
        );
    }
    let _ = writeln!(
        out,
        "upstream ross {{\n    server {upstream};\n    # Connections kept open to ross between requests (below ross's\n    # server.keep_alive_timeout_ms).\n    keepalive 32;\n    keepalive_timeout 20s;\n}}\n"
    );
    accept_map(formats, &mut out);
    target_map(tagging, &mut out);
    if settings
        .output
        .surrogate_keys
        .iter()
        .any(|h| h.separator() == ",")
    {
        out.push_str(
            "map $uri $ross_tags_commas {\n    \"~^/(?<w>[0-9]+)/(?<h>[0-9]+)/(?<m>[a-z0-9_-]+)/(?<k>.+)$\" \"ross,k-$k,m-$m,s-${w}x$h\";\n    default \"\";\n}\n\n",
        );
    }
    let _ = writeln!(
        out,
        "server {{\n    listen {};\n    server_name {};\n",
        site.listen, site.server_name
    );
    out.push_str(
        "    # Hits: ETag (\"mtime-length\", ross's form too) and Last-Modified come from the file;\n\
         \x20   # nginx answers If-None-Match and If-Modified-Since with 304 itself. No\n\
         \x20   # open_file_cache: it would go on serving a purged file.\n\
         \x20   etag on;\n    sendfile on;\n    tcp_nopush on;\n\n\
         \x20   # Sized renders: /{width}/{height}/{mode}/{key} ($uri is decoded and normalised, the\n\
         \x20   # key ross names its files by). Each format has a location of its own (a content type\n\
         \x20   # cannot come from a variable): this jumps to the one $ross_target names.\n\
         \x20   location ~ \"^/[0-9]+/[0-9]+/[a-z0-9_-]+/.\" {\n\
         \x20       error_page 418 = @ross_$ross_target;\n\
         \x20       return 418;\n    }\n\n",
    );
    for format in formats {
        let _ = writeln!(
            out,
            "    location @ross_{f} {{\n        root {root};\n        try_files $uri @ross;\n        types {{ }}\n        default_type {mime};",
            f = format.as_str(),
            root = quoted(&cache_dir.join(format.as_str()).display().to_string()),
            mime = format.media_type(),
        );
        if settings.hit_log.is_some() {
            let _ = writeln!(out, "        access_log {};", site.access_log);
            let target = match settings.hit_log.as_ref() {
                Some(HitLogListen::Udp(addr)) => addr.to_string(),
                Some(HitLogListen::Unix(path)) => format!("unix:{}", path.display()),
                None => unreachable!(),
            };
            let _ = writeln!(
                out,
                "        access_log syslog:server={target},tag=ross,nohostname ross_hit;"
            );
        }
        hit_headers(settings, varies, &mut out);
        out.push_str("    }\n");
    }
    out.push_str(
        "\n    # A request nginx leaves to ross: a header it cannot decide, a key it cannot tag.\n\
         \x20   location @ross_ask {\n        proxy_pass http://ross;\n    }\n\n",
    );
    out.push_str(
        "    # The admin pages and API, the metrics and readiness: admin.networks only.\n",
    );
    out.push_str("    location ~ \"^/(admin|metrics|ready)(/|$)\" {\n");
    for network in &settings.admin.networks {
        let _ = writeln!(out, "        allow {network};");
    }
    out.push_str("        deny all;\n        proxy_pass http://ross;\n    }\n\n");
    out.push_str(
        "    # Everything else is ross's: originals, /health, errors.\n\
         \x20   location / {\n        proxy_pass http://ross;\n    }\n\n\
         \x20   location @ross {\n        proxy_pass http://ross;\n    }\n\n\
         \x20   # How requests go to ross (inherited by the locations above).\n\
         \x20   proxy_http_version 1.1;\n\
         \x20   proxy_set_header Connection \"\";\n\
         \x20   proxy_set_header Host $host;\n\
         \x20   # ross trusts X-Real-IP from a loopback peer only (the admin login lockout counts by\n\
         \x20   # it); X-Forwarded-Proto marks the admin session cookie Secure behind TLS.\n\
         \x20   proxy_set_header X-Real-IP $remote_addr;\n\
         \x20   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20   proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20   # ross answers a render within limits.render_timeout_ms, or says 503 itself.\n\
         \x20   proxy_connect_timeout 2s;\n\
         \x20   proxy_read_timeout 30s;\n\
         \x20   proxy_send_timeout 30s;\n\
         \x20   # Errors come back as ross sent them, JSON bodies and all.\n\
         \x20   proxy_intercept_errors off;\n}\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        Settings::from_parts(
            None,
            None,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn the_shipped_site_is_the_packaged_settings_site() {
        let packaged = Settings::load(
            Some(&repo().join("deploy/debian/ross.toml")),
            std::iter::empty(),
        )
        .unwrap();
        let written = site(&packaged, &Site::default(), &packaged.cache.dir).unwrap();
        let shipped = std::fs::read_to_string(repo().join("deploy/nginx.conf")).unwrap();
        assert!(
            shipped == written,
            "deploy/nginx.conf is not `ross nginx-config --config deploy/debian/ross.toml`: \
             write it again with that command"
        );
    }

    #[test]
    fn the_site_follows_the_settings() {
        let one = settings(&[
            ("ROSS__SERVER__LISTEN", "0.0.0.0:9000"),
            ("ROSS__CACHE__MAX_AGE", "3600"),
            ("ROSS__OUTPUT__SURROGATE_KEYS", ""),
        ]);
        let text = site(&one, &Site::default(), Path::new("/srv/cache")).unwrap();
        assert!(text.contains("server 127.0.0.1:9000;"), "{text}");
        assert!(text.contains("root \"/srv/cache/jpeg\";"));
        assert!(text.contains("max-age=3600"));
        assert!(!text.contains("webp") && !text.contains("Vary"));
        assert!(!text.contains("Surrogate-Key") && !text.contains("syslog"));
        assert!(text.contains("allow 127.0.0.1;\n        allow ::1;\n        deny all;"));

        let three = settings(&[
            ("ROSS__OUTPUT__FORMATS", "avif,webp,jpeg"),
            ("ROSS__OUTPUT__SURROGATE_KEYS", "Surrogate-Key,Cache-Tag"),
            ("ROSS__OUTPUT__CORS_ORIGIN", "https://shop.example"),
            ("ROSS__ADMIN__NETWORKS", "10.0.0.0/8"),
            ("ROSS__HIT_LOG__LISTEN", "unix:/run/ross/hits.sock"),
        ]);
        let text = site(&three, &Site::default(), Path::new("/c")).unwrap();
        for format in ["jpeg", "webp", "avif"] {
            assert!(
                text.contains(&format!("location @ross_{format} {{")),
                "{text}"
            );
        }
        assert!(text.contains("add_header Vary Accept always;"));
        assert!(text.contains("add_header Surrogate-Key $ross_tags always;"));
        assert!(text.contains("add_header Cache-Tag $ross_tags_commas always;"));
        assert!(text.contains("Access-Control-Allow-Origin \"https://shop.example\""));
        assert!(text.contains("syslog:server=unix:/run/ross/hits.sock,"));
        assert!(text.contains("allow 10.0.0.0/8;\n        deny all;"));
        // ross's own answers for the browsers' headers.
        assert!(text.contains(
            "\"~*^image/avif,image/webp,image/apng,image/svg\\+xml,image/\\*,\\*/\\*;q=0\\.8$\" avif;"
        ), "{text}");
        assert!(text.contains(&format!(
            "{} jpeg;",
            quoted(&format!(
                "~*^{}$",
                regex_literal("image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5")
            ))
        )));
    }

    #[test]
    fn values_nginx_cannot_take_are_refused() {
        let s = settings(&[]);
        assert!(site(&s, &Site::default(), Path::new("/a$b")).is_err());
        let bad = Site {
            listen: "80; include /etc/passwd".into(),
            ..Site::default()
        };
        assert!(site(&s, &bad, Path::new("/c")).is_err());
    }
}
