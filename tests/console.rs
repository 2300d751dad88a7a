//! The admin console over real sockets (SPEC "Admin console"): the page and
//! its headers, /api/status and /api/events, and who may replay or drop.
//! Without a store every event id is unknown, so an authorized action
//! answers 404; with one (SQLite, a queued route whose app refuses events)
//! dead events are listed, replayed and dropped. The peer check's
//! non-loopback side is unit-tested in `net::console::guard` (a test cannot
//! connect from a non-loopback address here).

mod support;

use support::*;

const ROUTE: &str = "/webhooks/coolpopup";
const ACTION: (&str, &str) = ("x-hookgate-action", "1");

fn host(sidecar: &Sidecar) -> String {
    format!("127.0.0.1:{}", sidecar.admin.port())
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn status(sidecar: &Sidecar) -> serde_json::Value {
    let reply = sidecar.admin_send("GET", "/api/status", &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(header(&reply, "content-type").starts_with("application/json"));
    reply.json()
}

fn route<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {status}"))
}

#[tokio::test]
async fn console_page_has_a_strict_csp_and_loads_nothing_from_elsewhere() {
    let (_upstream, sidecar) = world().await;
    let page = sidecar.admin_send("GET", "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let csp = header(&page, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "cache-control"), "no-store");
    assert_eq!(header(&page, "x-frame-options"), "DENY");

    let html = String::from_utf8(page.body.to_vec())
        .unwrap()
        .to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(
        !html.contains("<style") && !html.contains("<script>"),
        "inline code"
    );
    // What it does load comes from the same listener, under the same headers.
    for (path, content_type) in [
        ("/console.js", "text/javascript; charset=utf-8"),
        ("/console.css", "text/css; charset=utf-8"),
    ] {
        assert!(html.contains(path), "{path} not referenced");
        let asset = sidecar.admin_send("GET", path, &[]).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type);
        assert_eq!(header(&asset, "content-security-policy"), csp);
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff");
        let text = String::from_utf8(asset.body.to_vec()).unwrap();
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}"
        );
    }
    // The icon (so the browser does not ask for /favicon.ico): an image that
    // loads nothing either.
    assert!(html.contains("/favicon.svg"));
    let icon = sidecar.admin_send("GET", "/favicon.svg", &[]).await;
    assert_eq!(icon.status, 200);
    assert_eq!(header(&icon, "content-type"), "image/svg+xml");
    assert_eq!(header(&icon, "content-security-policy"), csp);
    let svg = String::from_utf8(icon.body.to_vec()).unwrap();
    assert!(!svg.contains("href") && !svg.contains("<script"), "{svg}");
    let js = sidecar.admin_send("GET", "/console.js", &[]).await;
    let js = String::from_utf8(js.body.to_vec()).unwrap();
    assert!(!js.contains("innerHTML") && js.contains("textContent"));
    sidecar.stop().await;
}

#[tokio::test]
async fn api_status_counts_outcomes_and_estimates_latency_per_route() {
    let (upstream, sidecar) = world().await;
    for event in ["popup.shown", "popup.clicked", "popup.closed"] {
        assert_eq!(sidecar.post(ROUTE, &body_of(event)).await.status, 200);
    }
    let body = body_of("popup.shown");
    for _ in 0..2 {
        let r = sidecar
            .post_signed(Version::H1, ROUTE, &body, &"0".repeat(64))
            .await;
        r.expect_error(401, "invalid_signature");
    }
    sidecar
        .post("/nowhere", &body)
        .await
        .expect_error(404, "not_found");
    assert_eq!(upstream.take().len(), 3);

    let s = status(&sidecar).await;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["ready"], true);
    assert!(s["uptime_seconds"].as_u64().is_some(), "{s}");
    assert!(s["started_at"].as_i64().unwrap() <= s["now"].as_i64().unwrap());
    let r = route(&s, "coolpopup");
    assert_eq!(r["path"], ROUTE);
    assert_eq!(r["total"], 5);
    assert_eq!(r["outcomes"]["forwarded"], 3);
    assert_eq!(r["outcomes"]["invalid_signature"], 2);
    // By class: forwarded (or queued) against rejected by hookgate, and the
    // signature failures apart.
    assert_eq!(r["forwarded"], 3, "{r}");
    assert_eq!(r["rejected"], 2, "{r}");
    assert_eq!(r["signature_failures"], 2, "{r}");
    // The last minute: right after the start it is the uptime, all of it.
    let m = &r["last_minute"];
    assert!(m["seconds"].as_u64().is_some_and(|s| s <= 60), "{m}");
    assert_eq!(m["requests"], 5, "{m}");
    assert_eq!(m["forwarded"], 3, "{m}");
    assert_eq!(m["rejected"], 2, "{m}");
    assert_eq!(m["signature_failures"], 2, "{m}");
    assert!(
        m["per_second"].is_null() || m["per_second"].as_f64().is_some_and(|p| p > 0.0),
        "{m}"
    );
    let (p50, p99) = (
        r["latency_seconds"]["p50"].as_f64().expect("p50"),
        r["latency_seconds"]["p99"].as_f64().expect("p99"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= 5.0, "{r}");
    assert!(
        r["upstream_latency_seconds"]["p99"].as_f64().is_some(),
        "{r}"
    );
    assert_eq!(route(&s, "-")["outcomes"]["not_found"], 1);
    assert_eq!(route(&s, "-")["rejected"], 1);
    // The certificate in service: its subject and names, and when it expires.
    assert_eq!(s["certificate"]["subject"], "CN=localhost", "{s}");
    assert_eq!(
        s["certificate"]["names"],
        serde_json::json!(["localhost", "127.0.0.1"])
    );
    // The certificate in service, and no store.
    let expires_in = s["certificate"]["expires_in_seconds"].as_i64().unwrap();
    assert!(expires_in > 0, "{s}");
    assert!(s["certificate"]["not_after"].as_i64().unwrap() > s["now"].as_i64().unwrap());
    assert!(s["store"].is_null(), "{s}");
    assert_eq!(s["actions"]["token_required"], false);
    assert_eq!(s["reloads"]["recent"], serde_json::json!([]));
    assert!(
        !String::from_utf8_lossy(&sidecar.admin_send("GET", "/api/status", &[]).await.body)
            .contains(std::str::from_utf8(SECRET).unwrap())
    );
    sidecar.stop().await;
}

/// What every answer of the console carries, whatever its status.
fn assert_console_headers(reply: &Reply, what: &str) {
    for (name, want) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(header(reply, name), want, "{name} on {what}");
    }
    let csp = header(reply, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "CSP {csp:?} on {what}"
    );
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let (_upstream, sidecar) = world().await;
    let host = host(&sidecar);
    let id = "0190e0e4-7f3a-7000-8000-000000000001";
    let gets = [
        ("/", 200),
        ("/console.js", 200),
        ("/console.css", 200),
        ("/favicon.svg", 200),
        ("/api/status", 200),
        ("/api/events", 200),
        ("/api/events?state=dead&limit=5", 200),
        ("/api/events?state=lost", 400),
    ];
    for (path, status) in gets {
        for method in ["GET", "HEAD"] {
            let r = sidecar.admin_send(method, path, &[]).await;
            assert_eq!(r.status, status, "{method} {path}");
            assert_console_headers(&r, &format!("{method} {path}"));
        }
    }
    let replay = format!("/api/events/{id}/replay");
    let drop = format!("/api/events/{id}/drop");
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case<'_>; 6] = [
        // 403: no action header.
        ("POST", &replay, vec![("host", &host)], 403),
        // 404: passes the guard, no such event.
        ("POST", &drop, vec![("host", &host), ACTION], 404),
        (
            "POST",
            "/api/events/nope/replay",
            vec![("host", &host), ACTION],
            404,
        ),
        // 405 on the console's paths.
        ("GET", &replay, vec![], 405),
        ("POST", "/", vec![], 405),
        ("DELETE", "/api/status", vec![], 405),
    ];
    for (method, path, headers, status) in cases {
        let r = sidecar.admin_send(method, path, &headers).await;
        assert_eq!(r.status, status, "{method} {path}");
        assert_console_headers(&r, &format!("{method} {path}"));
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn api_status_lists_the_latest_reloads() {
    let (_upstream, sidecar) = world().await;
    std::fs::write(&sidecar.secret_file, "whsec-rotated-0001\n").unwrap();
    let summary = sidecar.reloader.reload();
    assert_eq!(summary.secrets_reloaded, ["coolpopup"]);
    // A pass that changes nothing is not listed.
    sidecar.reloader.reload();
    std::fs::write(&sidecar.secret_file, "\n").unwrap();
    assert_eq!(sidecar.reloader.reload().errors.len(), 1);

    let s = status(&sidecar).await;
    let reloads = &s["reloads"];
    assert!(reloads["checked_at"].as_i64().is_some(), "{reloads}");
    let recent = reloads["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{reloads}");
    // Newest first: the refused empty secret, then the rotation.
    assert_eq!(recent[0]["result"], "error");
    assert!(
        recent[0]["errors"][0].as_str().unwrap().contains("empty"),
        "{reloads}"
    );
    assert_eq!(recent[1]["result"], "ok");
    assert_eq!(
        recent[1]["secrets_reloaded"],
        serde_json::json!(["coolpopup"])
    );
    assert!(recent[1]["at"].as_i64().unwrap() <= recent[0]["at"].as_i64().unwrap());
    assert!(!s.to_string().contains("whsec-rotated"), "a secret in {s}");
    sidecar.stop().await;
}

#[tokio::test]
async fn api_events_is_an_empty_list_without_a_store() {
    let (_upstream, sidecar) = world().await;
    for path in [
        "/api/events",
        "/api/events?state=dead&limit=20",
        "/api/events?route=coolpopup",
    ] {
        let reply = sidecar.admin_send("GET", path, &[]).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.json(), serde_json::json!({"events": []}), "{path}");
        assert_eq!(header(&reply, "cache-control"), "no-store");
    }
    for bad in [
        "/api/events?state=lost",
        "/api/events?limit=0",
        "/api/events?body=1",
    ] {
        sidecar
            .admin_send("GET", bad, &[])
            .await
            .expect_error(400, "invalid_request");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn actions_without_the_action_header_are_forbidden() {
    let (_upstream, sidecar) = world().await;
    let host = host(&sidecar);
    for action in ["replay", "drop"] {
        let path = format!("/api/events/0190e0e4-7f3a-7000-8000-000000000001/{action}");
        let refused = sidecar.admin_send("POST", &path, &[("host", &host)]).await;
        refused.expect_error(403, "forbidden");
        assert!(
            refused.json()["message"]
                .as_str()
                .unwrap()
                .contains("X-Hookgate-Action")
        );
        let wrong = sidecar
            .admin_send(
                "POST",
                &path,
                &[("host", &host), ("x-hookgate-action", "yes")],
            )
            .await;
        wrong.expect_error(403, "forbidden");
        // With the header the request passes the guard; no store holds the id.
        sidecar
            .admin_send("POST", &path, &[("host", &host), ACTION])
            .await
            .expect_error(404, "not_found");
    }
    // Not a UUID: no event has it either.
    sidecar
        .admin_send("POST", "/api/events/nope/drop", &[("host", &host), ACTION])
        .await
        .expect_error(404, "not_found");
    sidecar.stop().await;
}

#[tokio::test]
async fn actions_from_a_rebound_or_cross_origin_page_are_forbidden() {
    let (_upstream, sidecar) = world().await;
    let host = host(&sidecar);
    let path = "/api/events/0190e0e4-7f3a-7000-8000-000000000001/replay";
    let evil_origin = [
        ("host", host.as_str()),
        ACTION,
        ("origin", "http://evil.example"),
    ];
    for headers in [
        vec![("host", "evil.example:9901"), ACTION],
        evil_origin.to_vec(),
        vec![ACTION],
    ] {
        sidecar
            .admin_send("POST", path, &headers)
            .await
            .expect_error(403, "forbidden");
    }
    let same_origin = format!("http://{host}");
    sidecar
        .admin_send(
            "POST",
            path,
            &[("host", &host), ACTION, ("origin", &same_origin)],
        )
        .await
        .expect_error(404, "not_found");
    sidecar.stop().await;
}

#[tokio::test]
async fn actions_need_the_bearer_token_when_token_file_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "tok-0123456789abcdef\n").unwrap();
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.admin_extra = format!("token_file = {:?}\n", token_file.display().to_string());
    let sidecar = Sidecar::start(opts).await;
    assert_eq!(status(&sidecar).await["actions"]["token_required"], true);

    let host = host(&sidecar);
    let path = "/api/events/0190e0e4-7f3a-7000-8000-000000000001/drop";
    let with = |auth: Option<&'static str>| {
        let mut h = vec![
            ("host", host.clone()),
            ("x-hookgate-action", "1".to_owned()),
        ];
        if let Some(a) = auth {
            h.push(("authorization", a.to_owned()));
        }
        h
    };
    let send = |h: Vec<(&'static str, String)>| {
        let sidecar = &sidecar;
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sidecar.admin_send("POST", path, &h).await
        }
    };
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer tok-0123456789abcde"),
        Some("Basic tok-0123456789abcdef"),
    ] {
        let r = send(with(auth)).await;
        r.expect_error(403, "forbidden");
        assert!(
            r.json()["message"].as_str().unwrap().contains("Bearer"),
            "{auth:?}"
        );
    }
    send(with(Some("Bearer tok-0123456789abcdef")))
        .await
        .expect_error(404, "not_found");
    // The token without the action header is still refused.
    let h = [
        ("host", host.as_str()),
        ("authorization", "Bearer tok-0123456789abcdef"),
    ];
    sidecar
        .admin_send("POST", path, &h)
        .await
        .expect_error(403, "forbidden");

    // A rotated token replaces the old one at the next reload.
    std::fs::write(&token_file, "tok-rotated-2\n").unwrap();
    assert!(sidecar.reloader.reload().admin_token_reloaded);
    send(with(Some("Bearer tok-0123456789abcdef")))
        .await
        .expect_error(403, "forbidden");
    send(with(Some("Bearer tok-rotated-2")))
        .await
        .expect_error(404, "not_found");
    let s = status(&sidecar).await;
    assert_eq!(s["reloads"]["recent"][0]["admin_token_reloaded"], true);
    assert!(!s.to_string().contains("tok-"), "the token in {s}");
    sidecar.stop().await;
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_config_error() {
    let upstream = Upstream::start().await;
    let mut opts = Options::new(upstream.url());
    opts.admin_extra = "token_file = \"/nonexistent/hookgate-admin-token\"\n".to_owned();
    let e = Sidecar::try_start(opts)
        .await
        .err()
        .expect("started without its token");
    assert!(e.contains("admin.token_file"), "{e}");
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let (_upstream, sidecar) = world().await;
    for path in [
        "/",
        "/api/status",
        "/api/events",
        "/console.js",
        "/favicon.svg",
        "/healthz",
        "/metrics",
    ] {
        for method in ["PUT", "DELETE", "POST", "PATCH"] {
            let r = sidecar.admin_send(method, path, &[]).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert_eq!(header(&r, "allow"), "GET, HEAD", "{method} {path}");
        }
    }
    for method in ["GET", "PUT", "DELETE"] {
        let r = sidecar
            .admin_send(
                method,
                "/api/events/0190e0e4-7f3a-7000-8000-000000000001/replay",
                &[],
            )
            .await;
        r.expect_error(405, "method_not_allowed");
        assert_eq!(header(&r, "allow"), "POST", "{method}");
    }
    // HEAD stays allowed where GET is; unknown paths are still 404.
    assert_eq!(
        sidecar.admin_send("HEAD", "/api/status", &[]).await.status,
        200
    );
    assert_eq!(sidecar.admin_send("GET", "/api", &[]).await.status, 404);
    let (status, body) = sidecar.admin_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    sidecar.stop().await;
}

/// A sidecar with a queued route (on SQLite in `db`) whose app answers 422,
/// so every event it takes dies at its first attempt, and a direct route.
fn with_store(app: String, db: &std::path::Path) -> Options {
    let mut opts = Options::new(app);
    opts.routes = vec![
        support::route("queued", "/webhooks/queued", "/status/422").with("delivery = \"queued\"\n"),
        support::route("coolpopup", ROUTE, "/hooks/popup"),
    ];
    opts.extra = format!(
        "[store]\nengine = \"sqlite\"\npath = {:?}\n",
        db.display().to_string()
    );
    opts
}

async fn dead_events(sidecar: &Sidecar) -> Vec<serde_json::Value> {
    let reply = sidecar
        .admin_send("GET", "/api/events?state=dead&limit=20", &[])
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn with_a_store_dead_events_are_listed_replayed_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(with_store(app.url(), &dir.path().join("events.db"))).await;
    let host = host(&sidecar);
    let mut ids = Vec::new();
    for tag in ["one", "two"] {
        // A conversion carries an email and form fields: none may show.
        let body = String::from_utf8_lossy(&body_of("popup.converted"))
            .replace("camp_abc123", &format!("camp_{tag}"))
            .into_bytes();
        let reply = sidecar.post("/webhooks/queued", &body).await;
        assert_eq!(reply.json()["status"], "queued", "{:?}", reply.body);
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    let mut waited = 0;
    let dead = loop {
        let dead = dead_events(&sidecar).await;
        if dead.len() == 2 {
            break dead;
        }
        assert!(waited < 100, "not both dead within 10 s: {dead:?}");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for e in &dead {
        assert!(ids.contains(&e["id"].as_str().unwrap().to_owned()), "{e}");
        assert_eq!(e["route"], "queued");
        assert_eq!(e["event"], "popup.converted");
        assert_eq!(e["state"], "dead");
        assert_eq!(e["attempts"], 1);
        assert!(
            e["last_error"].as_str().unwrap().contains("422"),
            "last_error: {e}"
        );
    }
    let listed = sidecar.admin_send("GET", "/api/events", &[]).await;
    let text = String::from_utf8_lossy(&listed.body);
    for private in ["jane", "Jane Smith", "@example.com", "Summer Sale"] {
        assert!(!text.contains(private), "{private} in {text}");
    }

    // The queue by route and state, and the queued requests counted as
    // forwarded (handed on for the app).
    let s = status(&sidecar).await;
    let store = &s["store"];
    assert_eq!(store["up"], true, "{store}");
    assert_eq!(store["totals"]["dead"], 2, "{store}");
    assert_eq!(store["totals"]["pending"], 0, "{store}");
    assert_eq!(store["routes"][0]["route"], "queued", "{store}");
    assert_eq!(store["routes"][0]["dead"], 2, "{store}");
    let q = route(&s, "queued");
    assert_eq!(q["outcomes"]["queued"], 2, "{q}");
    assert_eq!(q["forwarded"], 2, "{q}");
    assert_eq!(q["last_minute"]["forwarded"], 2, "{q}");
    assert!(!s.to_string().contains("jane"), "{s}");

    assert_eq!(app.wait_for(2, 10).await.len(), 2);
    // Replay: back to pending, attempts from the start.
    let replay = format!("/api/events/{}/replay", ids[0]);
    let r = sidecar
        .admin_send("POST", &replay, &[("host", &host), ACTION])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = r.json();
    assert_eq!(e["id"], ids[0].as_str());
    assert_eq!(e["state"], "pending", "{e}");
    assert_eq!(e["attempts"], 0, "{e}");
    // Delivered again: the app (still refusing) gets it a second time.
    let again = app.wait_for(3, 10).await;
    assert_eq!(again[2].all("x-webhook-id"), [ids[0].as_str()]);

    // Drop: gone from the list, then unknown.
    let drop = format!("/api/events/{}/drop", ids[1]);
    let r = sidecar
        .admin_send("POST", &drop, &[("host", &host), ACTION])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["id"], ids[1].as_str());
    assert!(
        dead_events(&sidecar)
            .await
            .iter()
            .all(|e| e["id"] != ids[1].as_str())
    );
    sidecar
        .admin_send("POST", &drop, &[("host", &host), ACTION])
        .await
        .expect_error(404, "not_found");
    // Refused without the action header, store or not.
    sidecar
        .admin_send("POST", &replay, &[("host", &host)])
        .await
        .expect_error(403, "forbidden");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_open_is_503_at_once_then_listed_once_open() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let app = Upstream::start().await;
    let sidecar = Sidecar::start(with_store(app.url(), &missing.join("events.db"))).await;
    // Ready, so the console does not wait for the store: 503 without delay.
    let started = std::time::Instant::now();
    sidecar
        .admin_send("GET", "/api/events", &[])
        .await
        .expect_error(503, "store_unavailable");
    let s = status(&sidecar).await;
    assert_eq!(s["store"]["up"], false, "{s}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    // The directory appears: the store opens in the background.
    std::fs::create_dir(&missing).unwrap();
    let mut waited = 0;
    while sidecar.admin_send("GET", "/api/events", &[]).await.status != 200 {
        assert!(waited < 100, "the store did not open within 10 s");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status(&sidecar).await["store"]["up"], true);
    sidecar.stop().await;
}
