//! The `hookgate` binary as an operator runs it: `check`, `sign`, `send` and
//! `serve`, their exit codes (0, 1, 2, 78), the config layers (file,
//! `HOOKGATE_*` environment, `HOOKGATE_CONFIG`), and secrets never shown.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a setup failure should panic with its message"
)]

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ROUTE: &str = "/webhooks/coolpopup";

#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Ran {
    let out = cmd.output().expect("cannot run the hookgate binary");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the hookgate binary");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a blocking command from async code, keeping the runtime (and the
/// recording upstream on it) going.
async fn run_async(mut cmd: Command) -> Ran {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// Asserts `text` names every key (the message itself may hold paths, not secrets).
fn assert_names_all(ran: &Ran, keys: &[&str]) {
    for key in keys {
        assert!(
            ran.stderr.contains(key),
            "{key} not named in stderr:\n{}",
            ran.stderr
        );
    }
}

/// TLS material and a secret file (SECRET plus a newline) in one temp dir.
struct Material {
    tls: TlsFiles,
    secret: PathBuf,
}

impl Material {
    fn new() -> Self {
        let tls = make_tls();
        let secret = tls.dir.path().join("secret");
        std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
        Self { tls, secret }
    }

    fn dir(&self) -> &Path {
        self.tls.dir.path()
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A usable config: `listen`/`admin` addresses, `upstream` URL, plus
    /// `upstream_extra` lines under [upstream] and `route_extra` in the route.
    fn config(
        &self,
        listen: &str,
        admin: &str,
        upstream: &str,
        upstream_extra: &str,
        route_extra: &str,
    ) -> String {
        format!(
            "[server]\nlisten = {listen:?}\n\
             [server.tls]\ncert_file = {:?}\nkey_file = {:?}\n\
             [admin]\nlisten = {admin:?}\n\
             [upstream]\nurl = {upstream:?}\ntimeout = \"2s\"\n{upstream_extra}\n\
             [log]\nformat = \"pretty\"\n\
             [reload]\ninterval = \"0s\"\n\
             [[routes]]\nname = \"coolpopup\"\npath = \"{ROUTE}\"\nsecret_files = [{:?}]\n{route_extra}\n",
            self.tls.cert.display().to_string(),
            self.tls.key.display().to_string(),
            self.secret.display().to_string(),
        )
    }

    /// A usable config for `check` (nothing is bound).
    fn check_config(&self, upstream: &str) -> PathBuf {
        let text = self.config("127.0.0.1:0", "127.0.0.1:0", upstream, "", "");
        self.file("config.toml", text.as_bytes())
    }
}

fn secret_text() -> &'static str {
    std::str::from_utf8(SECRET).unwrap()
}

// === check ===

#[test]
fn check_prints_the_effective_config_without_secrets() {
    let m = Material::new();
    let config = m.check_config("http://127.0.0.1:18080");
    let ran = run(hookgate().arg("check").arg("-c").arg(&config));
    assert_eq!(ran.code, Some(0), "stderr:\n{}", ran.stderr);
    for want in [
        "url = \"http://127.0.0.1:18080\"", // from the file
        "max_body_bytes = 65536",           // a default the file left out
        "name = \"coolpopup\"",
        "# route coolpopup /webhooks/coolpopup -> /webhooks/coolpopup: 1 secret(s) [redacted]",
        "# configuration OK",
    ] {
        assert!(ran.stdout.contains(want), "{want:?} missing from stdout");
    }
    // No assertion message may print the output here: it would hold the secret.
    assert!(
        !ran.stdout.contains(secret_text()),
        "check printed the secret on stdout"
    );
    assert!(
        !ran.stderr.contains(secret_text()),
        "check printed the secret on stderr"
    );
}

#[test]
fn check_reports_every_unknown_key() {
    let m = Material::new();
    let text = m.config(
        "127.0.0.1:0",
        "127.0.0.1:0",
        "http://127.0.0.1:18080",
        "timout = \"3s\"",
        "secret_file = \"/nowhere\"",
    );
    let config = m.file("config.toml", text.as_bytes());
    let ran = run(hookgate().arg("check").arg("-c").arg(&config));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert_names_all(&ran, &["upstream.timout", "routes[0].secret_file"]);
    assert!(
        ran.stdout.is_empty(),
        "nothing on stdout for a broken config"
    );
}

#[test]
fn check_reports_every_problem_at_once() {
    let m = Material::new();
    let text = format!(
        "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\nmin_version = \"1.1\"\n\
         [[routes]]\nname = \"coolpopup\"\npath = \"{ROUTE}\"\nsecret_files = [{:?}]\nevents = [\"popup.exploded\"]\n",
        m.dir().join("missing.crt").display().to_string(),
        m.tls.key.display().to_string(),
        m.dir().join("missing-secret").display().to_string(),
    );
    let config = m.file("config.toml", text.as_bytes());
    let ran = run(hookgate().arg("check").arg("-c").arg(&config));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert_names_all(
        &ran,
        &[
            "routes[0].secret_files[0]",
            "server.tls.min_version",
            "routes[0].events[0]",
            "server.tls.cert_file",
        ],
    );
    assert!(
        ran.stderr.contains("(4 problems)"),
        "stderr:\n{}",
        ran.stderr
    );
}

/// A secret file an editor saved with a byte-order mark, or with a stray
/// control character, could never match a signature: `check` (and `serve`)
/// refuse it with exit 78, naming the file and the problem, never the value.
#[test]
fn check_refuses_secrets_no_signature_could_match() {
    let m = Material::new();
    for (name, content, problem) in [
        (
            "bom",
            [&b"\xEF\xBB\xBF"[..], SECRET, b"\n"].concat(),
            "byte-order mark",
        ),
        ("ctl", [SECRET, b"\x07x\n"].concat(), "control character"),
    ] {
        let secret = m.file(name, &content);
        let text = m
            .config(
                "127.0.0.1:0",
                "127.0.0.1:0",
                "http://127.0.0.1:18080",
                "",
                "",
            )
            .replace(
                &m.secret.display().to_string(),
                &secret.display().to_string(),
            );
        let config = m.file("config.toml", text.as_bytes());
        for command in ["check", "serve"] {
            let ran = run(hookgate().arg(command).arg("-c").arg(&config));
            assert_eq!(
                ran.code,
                Some(78),
                "{name} {command}: stderr:\n{}",
                ran.stderr
            );
            assert_names_all(&ran, &["routes[0].secret_files[0]", problem]);
            assert!(
                ran.stderr.contains(&secret.display().to_string()),
                "{}",
                ran.stderr
            );
            assert!(!ran.stderr.contains(secret_text()), "the secret leaked");
        }
    }
}

#[test]
fn check_of_a_missing_config_file_is_a_config_error() {
    let m = Material::new();
    let ran = run(hookgate()
        .arg("check")
        .arg("-c")
        .arg(m.dir().join("nope.toml")));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert!(ran.stderr.contains("nope.toml"), "stderr:\n{}", ran.stderr);
}

#[test]
fn environment_overrides_the_file_and_is_validated() {
    let m = Material::new();
    let config = m.check_config("http://127.0.0.1:18080");

    let ran = run(hookgate()
        .arg("check")
        .arg("-c")
        .arg(&config)
        .env("HOOKGATE_UPSTREAM__TIMEOUT", "9s"));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert_names_all(&ran, &["upstream.timeout"]);

    let ran = run(hookgate()
        .arg("check")
        .arg("-c")
        .arg(&config)
        .env("HOOKGATE_UPSTREAM__TIMEOUT", "3s"));
    assert_eq!(ran.code, Some(0), "stderr:\n{}", ran.stderr);
    assert!(
        ran.stdout.contains("timeout = \"3s\""),
        "the env value is the effective one:\n{}",
        ran.stdout
    );
}

#[test]
fn unknown_key_from_the_environment_is_reported() {
    let m = Material::new();
    let config = m.check_config("http://127.0.0.1:18080");
    let ran = run(hookgate()
        .arg("check")
        .arg("-c")
        .arg(&config)
        .env("HOOKGATE_UPSTREAM__TIMOUT", "1s"));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert_names_all(&ran, &["upstream.timout"]);
}

#[test]
fn hookgate_config_names_the_file_when_no_flag_is_given() {
    let m = Material::new();
    let config = m.check_config("http://127.0.0.1:18081");
    // Run where no config.toml exists, so only HOOKGATE_CONFIG can find it.
    let elsewhere = tempfile::tempdir().unwrap();
    let ran = run(hookgate()
        .arg("check")
        .current_dir(elsewhere.path())
        .env("HOOKGATE_CONFIG", &config));
    assert_eq!(ran.code, Some(0), "stderr:\n{}", ran.stderr);
    assert!(
        ran.stdout.contains("url = \"http://127.0.0.1:18081\""),
        "stdout:\n{}",
        ran.stdout
    );

    // And without it, the default config.toml is missing there.
    let ran = run(hookgate().arg("check").current_dir(elsewhere.path()));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert!(
        ran.stderr.contains("config.toml"),
        "stderr:\n{}",
        ran.stderr
    );
}

// === command line ===

#[test]
fn bad_command_lines_exit_2() {
    let m = Material::new();
    for args in [
        vec!["frobnicate"],
        vec!["sign"],
        vec!["check", "--frobnicate"],
        vec![
            "send",
            "https://localhost:1/x",
            "--secret-file",
            "s",
            "--cacert",
            "c.pem",
            "--insecure",
        ],
        vec![
            "send",
            "https://localhost:1/x",
            "--secret-file",
            "s",
            "--event",
            "popup.exploded",
        ],
    ] {
        let ran = run(hookgate().args(&args).current_dir(m.dir()));
        assert_eq!(ran.code, Some(2), "{args:?}: stderr:\n{}", ran.stderr);
        assert!(!ran.stderr.is_empty(), "{args:?}: a usage error says why");
    }
    let ran = run(hookgate().arg("sign"));
    assert!(
        ran.stderr.contains("--secret-file"),
        "stderr:\n{}",
        ran.stderr
    );
}

// === sign ===

fn assert_signature_line(ran: &Ran, body: &[u8], secret: &[u8]) {
    assert_eq!(ran.code, Some(0), "stderr:\n{}", ran.stderr);
    let want = sign(body, secret);
    assert_eq!(ran.stdout, format!("{want}\n"));
    assert!(
        want.len() == 64
            && want
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn sign_prints_the_lowercase_hex_hmac_of_a_body_file() {
    let m = Material::new();
    let body = body_of("popup.converted");
    let body_file = m.file("body.json", &body);
    let ran = run(hookgate()
        .arg("sign")
        .arg("--secret-file")
        .arg(&m.secret)
        .arg(&body_file));
    assert_signature_line(&ran, &body, SECRET);
}

#[test]
fn sign_reads_the_body_from_stdin() {
    let m = Material::new();
    let body = b"{\"event\": \"popup.shown\"}\r\n".to_vec();
    let ran = run_with_stdin(
        hookgate().arg("sign").arg("--secret-file").arg(&m.secret),
        &body,
    );
    assert_signature_line(&ran, &body, SECRET);
}

#[test]
fn secret_file_trailing_newline_does_not_change_the_signature() {
    let m = Material::new();
    let body = body_of("popup.shown");
    let body_file = m.file("body.json", &body);
    let bare = m.file("bare-secret", SECRET);
    let with_newline = m.file("newline-secret", &[SECRET, b"\n"].concat());
    let a = run(hookgate()
        .arg("sign")
        .arg("--secret-file")
        .arg(&bare)
        .arg(&body_file));
    let b = run(hookgate()
        .arg("sign")
        .arg("--secret-file")
        .arg(&with_newline)
        .arg(&body_file));
    assert_signature_line(&a, &body, SECRET);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn sign_with_an_empty_or_missing_secret_fails() {
    let m = Material::new();
    let body_file = m.file("body.json", b"{}");
    let empty = m.file("empty-secret", b"\n");
    let ran = run(hookgate()
        .arg("sign")
        .arg("--secret-file")
        .arg(&empty)
        .arg(&body_file));
    assert_eq!(ran.code, Some(1), "stderr:\n{}", ran.stderr);
    assert!(ran.stdout.is_empty());
    let ran = run(hookgate()
        .arg("sign")
        .arg("--secret-file")
        .arg(m.dir().join("nope"))
        .arg(&body_file));
    assert_eq!(ran.code, Some(1), "stderr:\n{}", ran.stderr);
    assert!(ran.stderr.contains("nope"), "stderr:\n{}", ran.stderr);
}

// === serve + send ===

/// Two distinct free loopback ports (bound together, then released).
/// `hookgate serve` as a child process; killed on drop if still running.
struct Served {
    child: Option<Child>,
    port: u16,
    admin: SocketAddr,
    log: PathBuf,
}

impl Served {
    /// Starts `serve -c config` and waits (bounded 10 s) until /readyz is 200.
    async fn start(m: &Material, upstream: &str, server_extra: &str) -> Self {
        Self::start_with_route(m, upstream, server_extra, "").await
    }

    /// As `start`, with extra lines in the route.
    async fn start_with_route(
        m: &Material,
        upstream: &str,
        server_extra: &str,
        route_extra: &str,
    ) -> Self {
        // Both listeners on port 0: the ready line says where they are (no
        // free-port race with other tests).
        let mut text = m.config("127.0.0.1:0", "127.0.0.1:0", upstream, "", route_extra);
        text = text.replacen("[server]\n", &format!("[server]\n{server_extra}\n"), 1);
        let config = m.file("serve.toml", text.as_bytes());
        let log = m.dir().join("serve.log");
        let spawned = spawn_serve(&config, &log, 10).await;
        let served = Self {
            child: Some(spawned.child),
            port: spawned.addr.port(),
            admin: spawned.admin,
            log,
        };
        assert_eq!(served.readyz().await, Some(200), "{}", served.log());
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("https://localhost:{}{ROUTE}", self.port)
    }

    /// The /readyz status, or None if the admin listener does not answer.
    async fn readyz(&self) -> Option<u16> {
        use http_body_util::Full;
        use hyper_util::rt::TokioIo;
        let tcp = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get("/readyz")
            .header("host", "admin")
            .body(Full::new(bytes::Bytes::new()))
            .ok()?;
        Some(sender.send_request(req).await.ok()?.status().as_u16())
    }

    /// Sends SIGTERM and asserts the process exits 0 within 30 s.
    async fn terminate(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(&pid)
            .status()
            .unwrap();
        assert!(kill.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hookgate serve did not exit within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            status.code(),
            Some(0),
            "exit after SIGTERM:\n{}",
            self.log()
        );
        assert!(
            self.log().contains("hookgate stopped"),
            "log:\n{}",
            self.log()
        );
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send_cmd(served: &Served, secret: &Path) -> Command {
    let mut cmd = hookgate();
    cmd.arg("send")
        .arg(served.url())
        .arg("--secret-file")
        .arg(secret);
    cmd
}

/// `hookgate send` with the right secret, trusting the sidecar's certificate.
fn send_trusted(served: &Served, m: &Material) -> Command {
    let mut cmd = send_cmd(served, &m.secret);
    cmd.arg("--cacert").arg(&m.tls.cert);
    cmd
}

#[tokio::test]
async fn send_signs_and_posts_through_a_served_sidecar_which_stops_on_sigterm() {
    let m = Material::new();
    let upstream = Upstream::start().await;
    let served = Served::start(&m, &upstream.url(), "").await;

    // Trusting the server's own certificate.
    let mut cmd = send_trusted(&served, &m);
    cmd.args(["--event", "popup.clicked"]);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.starts_with("200"), "stdout:\n{}", ran.stdout);
    assert!(
        ran.stdout.contains("{\"ok\":true}"),
        "the response body is printed:\n{}",
        ran.stdout
    );
    let got = upstream.only_one();
    assert_eq!(got.all("x-webhook-event"), ["popup.clicked"]);
    assert_eq!(got.path, ROUTE);
    let sent: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["event"], "popup.clicked");

    // --insecure: no verification, same result.
    let mut cmd = send_cmd(&served, &m.secret);
    cmd.arg("--insecure");
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.starts_with("200"), "stdout:\n{}", ran.stdout);
    assert_eq!(
        upstream.only_one().all("x-webhook-event"),
        ["popup.converted"],
        "the default sample"
    );

    // --event ping: the provider's test ping, acknowledged and not forwarded.
    let mut cmd = send_trusted(&served, &m);
    cmd.args(["--event", "ping"]);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.starts_with("200"), "stdout:\n{}", ran.stdout);
    assert!(
        ran.stdout.contains("acknowledged"),
        "stdout:\n{}",
        ran.stdout
    );
    upstream.assert_nothing();

    // --body: exactly those bytes.
    let body = String::from_utf8(body_of("popup.shown"))
        .unwrap()
        .replace(",\"", ",\n  \"")
        + "\n";
    let body = body.into_bytes();
    let body_file = m.file("body.json", &body);
    let mut cmd = send_trusted(&served, &m);
    cmd.arg("--body").arg(&body_file);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(&upstream.only_one().body[..], &body[..]);

    // A wrong secret: the sidecar answers 401, send exits 1.
    let wrong = m.file("wrong-secret", SECRET_OLD);
    let mut cmd = send_cmd(&served, &wrong);
    cmd.arg("--cacert").arg(&m.tls.cert);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(ran.stdout.starts_with("401"), "stdout:\n{}", ran.stdout);
    assert!(
        ran.stdout.contains("invalid_signature"),
        "stdout:\n{}",
        ran.stdout
    );
    upstream.assert_nothing();

    served.terminate().await;
}

#[tokio::test]
async fn serve_on_a_single_threaded_runtime_forwards_and_stops_on_sigterm() {
    let m = Material::new();
    let upstream = Upstream::start().await;
    let served = Served::start(&m, &upstream.url(), "worker_threads = 1").await;
    let cmd = send_trusted(&served, &m);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert_eq!(
        upstream.only_one().all("x-webhook-event"),
        ["popup.converted"]
    );
    served.terminate().await;
}

/// `log.flush = "idle"` (the default): a request's log line reaches stdout
/// while the server runs, once it has nothing else to do, and every line
/// is written by the time the process has exited after SIGTERM.
#[tokio::test]
async fn request_log_lines_are_written_when_idle_and_all_by_exit() {
    let m = Material::new();
    let upstream = Upstream::start().await;
    let served = Served::start(&m, &upstream.url(), "worker_threads = 1").await;
    let requests = |log: &str| {
        log.lines()
            .filter(|l| l.contains("request_id") && l.contains("forwarded"))
            .count()
    };
    let cmd = send_trusted(&served, &m);
    assert_eq!(run_async(cmd).await.code, Some(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests(&served.log()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no request line within 10 s of the answer:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let cmd = send_trusted(&served, &m);
            tokio::spawn(run_async(cmd))
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap().code, Some(0));
    }
    let log = served.log.clone();
    served.terminate().await;
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(requests(&log), 9, "log:\n{log}");
    assert!(!log.contains(secret_text()), "the secret reached the log");
}

#[tokio::test]
async fn send_refuses_an_untrusted_certificate() {
    let m = Material::new();
    let upstream = Upstream::start().await;
    let served = Served::start(&m, &upstream.url(), "").await;
    // A CA file that is not the server's certificate.
    let (other, _) = cert_pair("someone else");
    let other_file = m.file("other.pem", other.as_bytes());
    let mut cmd = send_cmd(&served, &m.secret);
    cmd.arg("--cacert").arg(&other_file);
    let ran = run_async(cmd).await;
    assert_eq!(
        ran.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(
        ran.stderr.contains("TLS handshake failed"),
        "stderr:\n{}",
        ran.stderr
    );
    upstream.assert_nothing();
    served.terminate().await;
}

#[test]
fn serve_with_a_bad_config_exits_78_before_binding() {
    let m = Material::new();
    let config = m.check_config("https://127.0.0.1:18080");
    let ran = run(hookgate().arg("serve").arg("-c").arg(&config));
    assert_eq!(ran.code, Some(78), "stderr:\n{}", ran.stderr);
    assert_names_all(&ran, &["upstream.url"]);
}

#[test]
fn serve_on_a_port_in_use_exits_1_naming_the_listener() {
    let m = Material::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = m.config(
        &taken.local_addr().unwrap().to_string(),
        "127.0.0.1:0",
        "http://127.0.0.1:18080",
        "",
        "",
    );
    let config = m.file("config.toml", text.as_bytes());
    let ran = run(hookgate().arg("serve").arg("-c").arg(&config));
    assert_eq!(
        ran.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout,
        ran.stderr
    );
    assert!(
        ran.stderr.contains("server.listen"),
        "stderr:\n{}",
        ran.stderr
    );
}

#[tokio::test]
async fn sigterm_during_an_in_flight_request_completes_it_and_exits_0() {
    let m = Material::new();
    let upstream = Upstream::start().await;
    let served =
        Served::start_with_route(&m, &upstream.url(), "", "upstream_path = \"/slow/1000\"").await;
    let mut send = send_trusted(&served, &m);
    send.arg("--event").arg("popup.closed");
    let in_flight = tokio::spawn(run_async(send));
    // The request is in flight once the upstream has it (a signal, not a sleep).
    upstream.arrival().await;
    served.terminate().await;
    let ran = in_flight.await.unwrap();
    assert_eq!(ran.code, Some(0), "send: {}", ran.stdout);
    assert!(ran.stdout.starts_with("200"), "send: {}", ran.stdout);
    assert_eq!(upstream.only_one().all("x-webhook-event"), ["popup.closed"]);
}
