//! `hookgate events` as a real process on the store of a running sidecar
//! (SPEC, second part, "`hookgate events`"): list/show/replay/drop/stats,
//! `--json`, `--yes` for filters, exit 1 for an unknown id, 78 without a
//! store, and never a body in a listing.

mod support;

use std::path::{Path, PathBuf};

use support::*;

const PATH: &str = "/webhooks/queued";
const EMAIL: &str = "jane@example.com";

#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

#[expect(
    clippy::unwrap_used,
    reason = "a test helper: failing to run is a failure"
)]
fn events(config: &Path, args: &[&str]) -> Ran {
    let out = hookgate()
        .arg("events")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A config the CLI can load, naming the store at `db`.
#[expect(clippy::unwrap_used, reason = "a test helper")]
fn cli_config(dir: &Path, db: Option<&Path>) -> PathBuf {
    let mut text = "[server.tls]\nself_signed = true\n[[routes]]\nname = \"queued\"\n\
                    path = \"/webhooks/queued\"\nsecret_files = [\"/nonexistent\"]\n"
        .to_owned();
    if let Some(db) = db {
        text = format!(
            "[store]\nengine = \"sqlite\"\npath = {:?}\n{text}delivery = \"queued\"\n",
            db.display().to_string()
        );
    }
    let path = dir.join(if db.is_some() {
        "cli.toml"
    } else {
        "nostore.toml"
    });
    std::fs::write(&path, text).unwrap();
    path
}

fn converted(tag: &str) -> Vec<u8> {
    String::from_utf8_lossy(&body_of("popup.converted"))
        .replace("camp_abc123", &format!("camp_{tag}"))
        .into_bytes()
}

#[expect(clippy::unwrap_used, reason = "a test helper")]
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[expect(clippy::unwrap_used, reason = "a test helper")]
async fn wait_dead(sidecar: &Sidecar, n: f64) {
    let series = r#"hookgate_delivery_attempts_total{route="queued",result="dead"}"#;
    for _ in 0..100 {
        if sidecar.metric(series).await == Some(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{n} events not dead within 10 s: {:?}",
        sidecar.metric(series).await.unwrap()
    );
}

#[tokio::test]
async fn list_show_replay_drop_and_stats_on_a_running_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let app = Upstream::start().await;
    let mut opts = Options::new(app.url());
    // The app refuses (422): every event dies at its first attempt.
    opts.routes = vec![
        route("queued", PATH, "/status/422")
            .with("delivery = \"queued\"\nretry_schedule = [\"100ms\"]\n"),
    ];
    opts.extra = format!(
        "[store]\nengine = \"sqlite\"\npath = {:?}\n",
        db.display().to_string()
    );
    let sidecar = Sidecar::start(opts).await;
    let mut ids = Vec::new();
    for tag in ["a", "b", "c"] {
        let reply = sidecar.post(PATH, &converted(tag)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    wait_dead(&sidecar, 3.0).await;
    let config = cli_config(dir.path(), Some(&db));

    // list --json: one object per line, newest first, never the body.
    let ran = events(&config, &["list", "--json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let listed = json_lines(&ran.stdout);
    let listed_ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        listed_ids,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );
    for r in &listed {
        assert_eq!(r["state"], "dead");
        assert_eq!(r["route"], "queued");
        assert_eq!(r["event"], "popup.converted");
        assert_eq!(r["attempts"], 1);
        assert!(r["last_error"].as_str().unwrap().contains("422"), "{r}");
    }
    assert!(!ran.stdout.contains(EMAIL), "a listing printed the body");
    let table = events(&config, &["list", "--state", "dead"]);
    assert_eq!(table.code, Some(0));
    assert!(table.stdout.contains(&ids[0]) && !table.stdout.contains(EMAIL));
    assert_eq!(
        events(&config, &["list", "--state", "pending", "--json"]).stdout,
        ""
    );
    assert_eq!(
        json_lines(&events(&config, &["list", "--limit", "1", "--json"]).stdout).len(),
        1
    );

    // show: the record; --body the stored bytes.
    let shown = events(&config, &["show", &ids[0]]);
    assert_eq!(shown.code, Some(0), "{shown:?}");
    assert!(shown.stdout.contains("dead") && !shown.stdout.contains(EMAIL));
    let with_body = events(&config, &["show", &ids[0], "--body", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&with_body.stdout).unwrap();
    assert_eq!(doc["body"].as_str().unwrap().as_bytes(), converted("a"));

    // stats.
    let stats = events(&config, &["stats", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(doc["routes"][0]["dead"], 3, "{doc}");
    assert_eq!(doc["routes"][0]["pending"], 0, "{doc}");

    // replay of an id: back to pending, attempts from 1, delivered again (dies again).
    app.take();
    let replayed = events(&config, &["replay", &ids[0]]);
    assert_eq!(replayed.code, Some(0), "{replayed:?}");
    let again = app.wait_for(1, 10).await;
    assert_eq!(again[0].all("x-webhook-id"), [ids[0].as_str()]);
    assert_eq!(again[0].all("x-webhook-attempt"), ["1"]);
    wait_dead(&sidecar, 4.0).await;

    // A filter needs --yes; ids do not.
    let refused = events(&config, &["drop", "--state", "dead"]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    let dropped = events(&config, &["drop", &ids[1]]);
    assert_eq!(dropped.code, Some(0), "{dropped:?}");
    assert_eq!(
        json_lines(&events(&config, &["list", "--json"]).stdout).len(),
        2
    );
    // The dropped event keeps its duplicate key: the provider's retry is a duplicate.
    let retry = sidecar.post(PATH, &converted("b")).await;
    assert_eq!(retry.json()["status"], "duplicate", "{:?}", retry.body);
    let all = events(&config, &["drop", "--state", "dead", "--yes"]);
    assert_eq!(all.code, Some(0), "{all:?}");
    assert_eq!(events(&config, &["list", "--json"]).stdout, "");

    // Unknown ids: exit 1.
    let unknown = "01890000-0000-7000-8000-000000000000";
    for args in [["show", unknown], ["replay", unknown], ["drop", unknown]] {
        let ran = events(&config, &args);
        assert_eq!(ran.code, Some(1), "{args:?}: {ran:?}");
        assert!(ran.stderr.contains(unknown), "{ran:?}");
    }
    sidecar.stop().await;
}

#[test]
fn without_a_store_events_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path(), None);
    let ran = events(&config, &["list"]);
    assert_eq!(ran.code, Some(78), "{ran:?}");
    assert!(ran.stderr.contains("[store]"), "{ran:?}");
}

#[test]
fn a_store_file_that_does_not_exist_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mistyped.db");
    let config = cli_config(dir.path(), Some(&db));
    let ran = events(&config, &["list"]);
    assert_eq!(ran.code, Some(78), "{ran:?}");
    assert!(ran.stderr.contains("does not exist"), "{ran:?}");
    assert!(!db.exists(), "events created an empty store");
}
