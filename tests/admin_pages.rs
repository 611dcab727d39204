//! The admin pages over HTTP, without a browser (tests/browser drives them in Chromium): the
//! login, its lockout, the security headers, CSRF, and the page, the admin API and `/metrics`
//! agreeing.

use std::time::{Duration, Instant};

use crate::util::{TestServer, ADMIN_TOKEN};

/// The value of the cookie `name` a reply sets.
fn set_cookie(reply: &crate::util::Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = pair.split_once('=')?;
            (k == name).then(|| value.to_owned())
        })
}

/// The value of the hidden field `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// POSTs a form with `cookie`.
async fn post(server: &TestServer, path: &str, cookie: &str, form: &str) -> crate::util::Reply {
    let req = server
        .client()
        .post(path)
        .header("Cookie", cookie)
        .content_type("application/x-www-form-urlencoded")
        .body(form.to_owned());
    server.request(req).await
}

/// GETs `path` with `cookie`.
async fn get(server: &TestServer, path: &str, cookie: &str) -> crate::util::Reply {
    server
        .request(server.client().get(path).header("Cookie", cookie))
        .await
}

/// Tries `token` on the login form: the answer.
async fn try_token(server: &TestServer, token: &str) -> crate::util::Reply {
    let page = server.get("/admin/login").await;
    assert_eq!(page.status, 200);
    let login = set_cookie(&page, "ross_login").expect("no login form cookie");
    let csrf = hidden(&page.text(), "csrf");
    post(
        server,
        "/admin/login",
        &format!("ross_login={login}"),
        &format!("csrf={csrf}&token={token}"),
    )
    .await
}

/// Logs in: the session cookie (as a `Cookie` header) and the session's CSRF token.
async fn log_in(server: &TestServer) -> (String, String) {
    let reply = try_token(server, ADMIN_TOKEN).await;
    assert_eq!((reply.status, reply.header("location")), (303, "/admin"));
    let session = set_cookie(&reply, "ross_session").expect("no session cookie");
    let cookie = format!("ross_session={session}");
    let dashboard = get(server, "/admin", &cookie).await;
    assert_eq!(dashboard.status, 200);
    (cookie, hidden(&dashboard.text(), "csrf"))
}

fn assert_protected(reply: &crate::util::Reply, what: &str) {
    let csp = reply.header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{what}: {csp:?}"
    );
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(reply.header("referrer-policy"), "same-origin", "{what}");
    assert_eq!(reply.header("x-frame-options"), "DENY", "{what}");
}

#[tokio::test]
async fn pages_need_a_session_and_carry_the_security_headers() {
    let server = TestServer::builder().start().await;
    let pages = [
        "/admin",
        "/admin/whitelist",
        "/admin/cache",
        "/admin/plugins",
        "/admin/cluster",
        "/admin/settings",
    ];
    for page in pages {
        let reply = server.get(page).await;
        assert_eq!(
            (reply.status, reply.header("location")),
            (303, "/admin/login"),
            "{page} without a session"
        );
        assert_protected(&reply, page);
    }
    let login = server.get("/admin/login").await;
    assert_protected(&login, "login");
    let cookie = login.header("set-cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "Secure over plain HTTP: {cookie}"
    );
    let (session, csrf) = log_in(&server).await;
    for page in pages {
        let reply = get(&server, page, &session).await;
        assert_eq!(reply.status, 200, "{page}");
        assert_eq!(reply.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(reply.header("cache-control"), "no-store", "{page}");
        assert_protected(&reply, page);
        assert!(
            !reply.text().contains(ADMIN_TOKEN),
            "{page} shows the token"
        );
    }
    // A state change without the session's token is refused and changes nothing.
    let entries = server.state.cache.stats().entries;
    assert_eq!(
        server.get("/300/300/crop/photos/Dune.jpg").await.status,
        200
    );
    for form in ["kind=all", "kind=all&csrf=nope"] {
        let reply = post(&server, "/admin/cache/purge", &session, form).await;
        assert_eq!(reply.status, 403, "{form}");
        assert_protected(&reply, "a refused purge");
    }
    assert_eq!(server.state.cache.stats().entries, entries + 1);
    let reply = post(
        &server,
        "/admin/cache/purge",
        &session,
        &format!("kind=all&csrf={csrf}"),
    )
    .await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/admin/cache")
    );
    assert_eq!(server.state.cache.stats().entries, 0);
    let page = get(&server, "/admin/cache", &session).await.text();
    assert!(page.contains("Purged 1 entry"), "{page}");
    // A method a page does not take: 405 with Allow.
    let reply = server.request(server.client().delete("/admin/cache")).await;
    assert_eq!((reply.status, reply.header("allow")), (405, "GET"));
    // Logging out ends the session.
    let reply = post(&server, "/admin/logout", &session, &format!("csrf={csrf}")).await;
    assert_eq!(
        (reply.status, reply.header("location")),
        (303, "/admin/login")
    );
    assert!(reply.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(get(&server, "/admin", &session).await.status, 303);
}

#[tokio::test]
async fn the_session_cookie_is_secure_behind_tls() {
    let server = TestServer::builder().start().await;
    let page = server
        .request(
            server
                .client()
                .get("/admin/login")
                .header("X-Forwarded-Proto", "https"),
        )
        .await;
    assert!(page.header("set-cookie").contains("; Secure"));
    let configured = TestServer::builder()
        .set("ROSS__ADMIN__SECURE_COOKIES", "true")
        .start()
        .await;
    let page = configured.get("/admin/login").await;
    assert!(page.header("set-cookie").contains("; Secure"));
}

/// Wrong tokens are answered after a delay; after five, the address is refused (429 with
/// `Retry-After`) even with the right token, until the window has passed.
#[tokio::test]
async fn failed_logins_are_slowed_down_then_locked_out() {
    let server = TestServer::builder().start().await;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = try_token(&server, "not-the-token-at-all").await;
        assert_eq!(reply.status, 401);
        assert!(reply.text().contains("not the admin token"));
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "not slowed down"
        );
    }
    let reply = try_token(&server, ADMIN_TOKEN).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    let wait: u64 = reply.header("retry-after").parse().unwrap();
    assert!(wait > 800 && wait <= 900, "{wait}");
    assert!(set_cookie(&reply, "ross_session").is_none());
    // The login form without its cookie's token is refused too.
    let page = server.get("/admin/login").await;
    let csrf = hidden(&page.text(), "csrf");
    let fresh = TestServer::builder().start().await;
    let reply = post(
        &fresh,
        "/admin/login",
        "",
        &format!("csrf={csrf}&token={ADMIN_TOKEN}"),
    )
    .await;
    assert_eq!(reply.status, 403);
}

/// The dashboard, the admin API's stats and `/metrics` read the same counters.
#[tokio::test]
async fn the_page_the_api_and_metrics_agree() {
    let server = TestServer::builder().start().await;
    for path in [
        "/300/300/crop/photos/Dune.jpg",
        "/300/300/crop/photos/Dune.jpg",
        "/200/200/resize/photos/Storm.jpg",
        "/200/200/resize/photos/nope.jpg",
    ] {
        server.get(path).await;
    }
    let (session, _) = log_in(&server).await;
    let metrics = server.get("/metrics").await.text();
    let stats = server.admin("GET", "/stats", "").await.json();
    let page = get(&server, "/admin", &session).await.text();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    for (name, key, want) in [
        ("ross_hits_total", "hits", 1),
        ("ross_misses_total", "misses", 2),
        ("ross_renders_total", "renders", 2),
        ("ross_source_fetches_total", "fetches", 3),
    ] {
        assert_eq!(metric(name), want, "{name}");
        assert_eq!(stats[key], want, "{key}");
    }
    assert!(page.contains("hits 1 · misses 2"), "{page}");
    assert_eq!(
        metric("ross_stage_ms_count{stage=\"decode\"}"),
        stats["stages"][2]["count"].as_u64().unwrap()
    );
    assert_eq!(stats["stages"][2]["stage"], "decode");
    assert!(page.contains("source-not-found"), "recent errors: {page}");
    assert_eq!(metric("ross_errors_total{status=\"404\"}"), 1);
    assert_eq!(stats["errors"]["404"], 1);
}

/// With `admin.enabled = false` there are no pages and no API, but the stylesheet the welcome
/// page uses is still served.
#[tokio::test]
async fn admin_off_leaves_only_the_static_files() {
    let server = TestServer::builder()
        .set("ROSS__ADMIN__ENABLED", "false")
        .start()
        .await;
    for path in ["/admin", "/admin/login", "/admin/api/stats"] {
        let reply = server.get(path).await;
        assert_ne!(reply.status, 200, "{path}");
        assert_ne!(reply.status, 303, "{path}");
    }
    let css = server.get("/admin/static/admin.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
}

/// Removing a size and turning the whitelist off break images on the site at once: each
/// form first shows what it would do (the renders it purges), and changes nothing until that
/// step is confirmed. Turning the whitelist on, or adding a size, needs no such step.
#[tokio::test]
async fn removing_a_size_and_turning_the_whitelist_off_ask_first() {
    let server = TestServer::builder().whitelist("300x200").start().await;
    assert_eq!(
        server.get("/300/200/crop/photos/Dune.jpg").await.status,
        200
    );
    let (cookie, csrf) = log_in(&server).await;
    let size: ross_config::Size = "300x200".parse().unwrap();

    let asked = post(
        &server,
        "/admin/whitelist/remove",
        &cookie,
        &format!("csrf={csrf}&size=300x200"),
    )
    .await;
    assert_eq!(asked.status, 200);
    let page = asked.text();
    assert!(page.contains("Remove 300x200?"), "{page}");
    assert!(page.contains("1 cached render"), "{page}");
    assert_eq!(hidden(&page, "confirm"), "yes");
    assert!(
        server.state.whitelist.allows(size),
        "asking removed the size"
    );
    assert_eq!(
        server.get("/300/200/crop/photos/Dune.jpg").await.status,
        200
    );

    let done = post(
        &server,
        "/admin/whitelist/remove",
        &cookie,
        &format!("csrf={csrf}&size=300x200&confirm=yes"),
    )
    .await;
    assert_eq!(done.status, 303);
    assert!(!server.state.whitelist.allows(size));
    assert_eq!(
        server.get("/300/200/crop/photos/Dune.jpg").await.status,
        403
    );

    let asked = post(
        &server,
        "/admin/whitelist/enabled",
        &cookie,
        &format!("csrf={csrf}&enabled=false"),
    )
    .await;
    assert_eq!(asked.status, 200);
    assert!(asked.text().contains("Turn the whitelist off?"));
    assert!(
        server.state.whitelist.snapshot().enabled,
        "asking turned it off"
    );
    let done = post(
        &server,
        "/admin/whitelist/enabled",
        &cookie,
        &format!("csrf={csrf}&enabled=false&confirm=yes"),
    )
    .await;
    assert_eq!(done.status, 303);
    assert!(!server.state.whitelist.snapshot().enabled);
    let on = post(
        &server,
        "/admin/whitelist/enabled",
        &cookie,
        &format!("csrf={csrf}&enabled=true"),
    )
    .await;
    assert_eq!(on.status, 303, "turning it on asked first");
    assert!(server.state.whitelist.snapshot().enabled);
}

/// The settings page shows each value in units people read, and where it came from.
#[tokio::test]
async fn settings_show_units_and_where_each_value_came_from() {
    let server = TestServer::builder()
        .set("ROSS__LIMITS__MAX_WIDTH", "3000")
        .start()
        .await;
    let (cookie, _) = log_in(&server).await;
    let page = get(&server, "/admin/settings", &cookie).await.text();
    let row = |key: &str| {
        let start = page
            .find(&format!("<code>{key}</code>"))
            .unwrap_or_else(|| panic!("no {key} in {page}"));
        page[start..].split("</tr>").next().unwrap().to_owned()
    };
    assert!(row("limits.max_width").contains("env ROSS__LIMITS__MAX_WIDTH"));
    let cache = row("cache.max_bytes");
    assert!(
        cache.contains("GiB") && cache.contains("default"),
        "{cache}"
    );
    assert!(row("server.header_timeout_ms").contains("10 s"));
}

/// Several sizes at once in the page's forms, the removal confirmed first; a whitelist kept
/// in the settings file is shown without forms; a node alone says so on the Cluster page.
#[tokio::test]
async fn sizes_in_bulk_a_read_only_whitelist_and_the_cluster_page() {
    let server = TestServer::builder().whitelist("72x72").start().await;
    let (cookie, csrf) = log_in(&server).await;
    let added = post(
        &server,
        "/admin/whitelist",
        &cookie,
        &format!("csrf={csrf}&size=10x10%2C+20x20"),
    )
    .await;
    assert_eq!(added.status, 303);
    let allowed = |s: &str| server.state.whitelist.allows(s.parse().unwrap());
    assert!(allowed("10x10") && allowed("20x20"));
    let asked = post(
        &server,
        "/admin/whitelist/remove",
        &cookie,
        &format!("csrf={csrf}&size=10x10+20x20"),
    )
    .await;
    assert_eq!(asked.status, 200);
    assert!(
        asked.text().contains("Remove 10x10, 20x20?"),
        "{}",
        asked.text()
    );
    assert!(allowed("10x10"), "asking removed a size");
    let size = hidden(&asked.text(), "size");
    let done = post(
        &server,
        "/admin/whitelist/remove",
        &cookie,
        &format!(
            "csrf={csrf}&size={}&confirm=yes",
            size.replace(", ", "%2C+")
        ),
    )
    .await;
    assert_eq!(done.status, 303);
    assert!(!allowed("10x10") && !allowed("20x20") && allowed("72x72"));
    let alone = get(&server, "/admin/cluster", &cookie).await.text();
    assert!(alone.contains("Not in a cluster"), "{alone}");

    let fixed = TestServer::builder()
        .whitelist("72x72")
        .set("ROSS__WHITELIST__SOURCE", "config")
        .start()
        .await;
    let (cookie, _) = log_in(&fixed).await;
    let page = get(&fixed, "/admin/whitelist", &cookie).await.text();
    assert!(page.contains("Kept in the settings file"), "{page}");
    assert!(page.contains("72x72"), "{page}");
    assert!(
        !page.contains("action=\"/admin/whitelist/remove\""),
        "{page}"
    );
    assert!(!page.contains("action=\"/admin/whitelist\""), "{page}");
}
