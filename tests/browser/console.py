#!/usr/bin/env python3
"""The admin console in a real browser: headless Chromium driven by Selenium.

    python3 tests/browser/console.py target/release/hookgate [--screenshot PATH]

Two sidecars of the binary, each with a throwaway config (self-signed TLS, loopback ports,
a recording app):

1. without a store: signed and badly signed requests, then the page (WebDriverWait, no
   fixed sleeps) shows the route's counts, its last minute and signature failures, the
   certificate, and says there is no queue; the browser logged nothing (no
   Content-Security-Policy violation, so the CSP blocks nothing the page needs, and no
   script error), and it does enforce the CSP;
2. with a SQLite `[store]` in a temporary directory, an admin token, and a queued route
   whose app answers 400 to its first two events and 200 after: both events die and
   show in the dead list; Replay (with the token typed in) makes one delivered and its
   row goes; Drop (two clicks) deletes the other; traffic between refreshes draws the
   chart (an <svg> with path and rect elements).

A full-page screenshot of the second page, with the dead events listed, is saved as
target/browser/console.png ($CARGO_TARGET_DIR/browser/ when that is set), a CI artifact,
and also at PATH with --screenshot (docs/console.png is made that way). Exits non-zero on
any failure.

Needs Debian's `chromium` and `chromium-driver` (paths from $CHROMIUM / $CHROMEDRIVER, else
PATH) and `pip install selenium`; the driver is never downloaded.
"""

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SECRET = b"whsec-browser-test-0123456789"
ROUTE = "coolpopup"
PATH = "/webhooks/coolpopup"
QUEUED = "leads"
QUEUED_PATH = "/webhooks/leads"
ADMIN_TOKEN = "console-browser-test-token-0123456789"
CERT_CN = "hooks.browser-test.example"
WAIT = 20  # seconds WebDriverWait gives the page to show something
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Failed(Exception):
    pass


def check(ok, message):
    if not ok:
        raise Failed(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The upstream app: answers 200 to every POST and records them, except on /leads,
    where it answers 400 to the first `refuse` requests (so queued events die)."""

    def __init__(self, refuse=0):
        self.count = 0
        self.refuse = refuse
        self.leads = []  # (X-Webhook-Id, status answered)
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                status = 200
                with outer.lock:
                    outer.count += 1
                    if self.path == "/leads":
                        if outer.refuse > 0:
                            outer.refuse -= 1
                            status = 400
                        outer.leads.append((self.headers.get("x-webhook-id"), status))
                body = b'{"ok":true}' if status == 200 else b'{"error":"refused"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lead_statuses(self, webhook_id):
        with self.lock:
            return [status for (i, status) in self.leads if i == webhook_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Hookgate:
    """The binary under test with a config of its own in a temporary directory."""

    def __init__(self, binary, app_port, workdir, store=False, cert_days=None):
        self.port, self.admin_port = free_port(), free_port()
        os.makedirs(workdir, exist_ok=True)
        tls = "self_signed = true"
        if cert_days is not None:
            # A certificate of our own that expires in cert_days days.
            crt, key = os.path.join(workdir, "tls.crt"), os.path.join(workdir, "tls.key")
            made = subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", str(cert_days), "-subj", f"/CN={CERT_CN}",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", key, "-out", crt], capture_output=True, timeout=30)
            check(made.returncode == 0, f"openssl: {made.stderr.decode(errors='replace')[-300:]}")
            tls = f'cert_file = "{crt}"\nkey_file = "{key}"'

        secret = os.path.join(workdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET + b"\n")
        admin_extra = queued = ""
        if store:
            token = os.path.join(workdir, "admin-token")
            with open(token, "w") as f:
                f.write(ADMIN_TOKEN + "\n")
            admin_extra = f'token_file = "{token}"'
            queued = f"""
[store]
engine = "sqlite"
path = "{os.path.join(workdir, 'events.db')}"
[[routes]]
name = "{QUEUED}"
path = "{QUEUED_PATH}"
upstream_path = "/leads"
secret_files = ["{secret}"]
delivery = "queued"
"""
        config = os.path.join(workdir, "config.toml")
        self.config = config
        with open(config, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:{self.port}"
[server.tls]
{tls}
[admin]
listen = "127.0.0.1:{self.admin_port}"
{admin_extra}
[upstream]
url = "http://127.0.0.1:{app_port}"
[log]
format = "json"
[reload]
interval = "0s"
[[routes]]
name = "{ROUTE}"
path = "{PATH}"
secret_files = ["{secret}"]
{queued}""")
        self.log = open(os.path.join(workdir, "hookgate.log"), "wb")
        # Only what the binary needs: a HOOKGATE_* variable would be read as config.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.binary = binary
        self.proc = subprocess.Popen([binary, "serve", "-c", config], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while not self.ready():
            check(self.proc.poll() is None, f"hookgate exited with {self.proc.returncode}")
            check(time.time() < deadline, "hookgate was not ready within 20 s")
            time.sleep(0.05)

    def ready(self):
        try:
            with urllib.request.urlopen(f"{self.admin_url}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def post(self, body, signature, path=PATH):
        """(status, JSON answer) of a POST with this signature."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the throwaway self-signed certificate
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", data=body, method="POST",
                                     headers={"content-type": "application/json",
                                              "x-coolpopup-signature": signature})
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}

    def api(self, path):
        with urllib.request.urlopen(f"{self.admin_url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def events(self):
        """Every stored event, as `hookgate events list --json` shows it (one JSON object a
        line)."""
        out = subprocess.run([self.binary, "events", "list", "--json", "-c", self.config],
                             capture_output=True, timeout=30,
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        check(out.returncode == 0, f"hookgate events list exited {out.returncode}: "
              f"{out.stderr.decode(errors='replace')[-500:]}")
        return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def event_body(event, n):
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return json.dumps({
        "event": event,
        "campaign_id": f"camp_browser_{os.getpid()}_{n}",
        "campaign_name": "Browser test",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "page_url": "https://example.com/landing",
    }).encode()


def sign(body):
    return hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--window-size=1300,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def fresh(read):
    """read() again if the page re-rendered under it. The console redraws its tables every
    second: an element found just before that is stale when it is read (a CI run failed on
    StaleElementReference while a failure message read the queue row)."""
    for _ in range(4):
        try:
            return read()
        except StaleElementReferenceException:
            continue
    return read()


def text_of(driver, css):
    """The element's text, or None while it is not there (for WebDriverWait)."""
    def read():
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else None
    return fresh(read)


def wait_text(driver, css, want, what):
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text_of(d, css) == want)
    except Exception:
        raise Failed(f"{what}: {css} shows {text_of(driver, css)!r}, want {want!r} within {WAIT} s")


# === the checks ===

def wait_until(driver, condition, what):
    try:
        return WebDriverWait(driver, WAIT).until(condition)
    except Exception:
        raise Failed(f"{what}: not within {WAIT} s")


def check_route_counts(driver, side):
    """The route's row appears with its counts by outcome, its last minute, its signature
    failures and its latencies; the certificate shows its subject and expiry."""
    row = f'#routes tr[data-route="{ROUTE}"]'
    wait_text(driver, f'{row} .outcome[data-outcome="forwarded"] .count', "2", "forwarded count")
    wait_text(driver, f'{row} .outcome[data-outcome="invalid_signature"] .count', "1",
              "invalid_signature count")
    wait_text(driver, f"{row} td.total", "3", "total")
    sig = text_of(driver, f"{row} td.sig") or ""
    check(sig.startswith("1") and "1 in the last minute" in sig, f"signature failures show {sig!r}")
    check("bad" in driver.find_element(By.CSS_SELECTOR, f"{row} td.sig").get_attribute("class"),
          "a signature failure in the last minute is not shown red")
    # Over the uptime while it is under a minute (a rate once it is over a second).
    wait_until(driver, lambda d: "/min" in (text_of(d, f"{row} td.rate") or ""),
               f"a rate in the last minute (shows {text_of(driver, f'{row} td.rate')!r})")
    rate = text_of(driver, f"{row} td.rate")
    check("2 forwarded, 1 rejected" in rate, f"last minute shows {rate!r}")
    for cell in ("p50", "p99"):
        value = text_of(driver, f"{row} td.{cell}")
        check(value and value.endswith(("ms", " s")), f"{cell} shows {value!r}")
    check(text_of(driver, "#version") not in (None, ""), "no version shown")
    check(text_of(driver, "#ready") == "yes", f"ready shows {text_of(driver, '#ready')!r}")


def check_certificate(driver, subject, red):
    """The certificate's subject and names, and its expiry: red under 14 days."""
    wait_until(driver, lambda d: (text_of(d, "#certificate") or "").startswith(subject),
               f"certificate subject {subject!r} (shows {text_of(driver, '#certificate')!r})")
    shown = text_of(driver, "#certificate")
    check("localhost" in shown and "127.0.0.1" in shown, f"certificate shows {shown!r}")
    expiry = driver.find_element(By.ID, "cert-expiry")
    check(" UTC (in " in expiry.text, f"expiry shows {expiry.text!r}")
    is_red = "bad" in (expiry.get_attribute("class") or "")
    check(is_red == red, f"expiry {expiry.text!r} is {'' if is_red else 'not '}red")
    colour = expiry.value_of_css_property("color")
    normal = driver.find_element(By.ID, "updated").value_of_css_property("color")
    check((colour != normal) == red, f"expiry colour {colour}, updated's {normal}")


def check_without_store(driver, side):
    """Without a [store] the page says so and shows no queue or dead events."""
    wait_until(driver, lambda d: d.find_element(By.ID, "no-store").is_displayed(), "no-store note")
    check(not driver.find_element(By.ID, "store").is_displayed(), "the queue section is shown")


def dead_row(driver, event_id):
    def read():
        found = driver.find_elements(By.CSS_SELECTOR, f'#dead tr[data-id="{event_id}"]')
        return found[0] if found and found[0].is_displayed() else None
    return fresh(read)


def click_action(driver, event_id, action):
    button = driver.find_element(By.CSS_SELECTOR,
                                 f'#dead tr[data-id="{event_id}"] button[data-action="{action}"]')
    button.click()
    return button


def check_dead_events_listed(driver, side, app, ids):
    """Both refused events show in the dead list, with what the page may show of them and
    nothing more; the queue counts them."""
    for event_id in ids:
        wait_until(driver, lambda d, i=event_id: dead_row(d, i), f"dead row for {event_id}")
        cells = fresh(lambda i=event_id: [td.text for td in
                                          dead_row(driver, i).find_elements(By.TAG_NAME, "td")])
        check(cells[0] == event_id and cells[1] == QUEUED and cells[2] == "popup.shown"
              and cells[3] == "1" and "400" in cells[4], f"dead row shows {cells!r}")
    queue_row = f'#queue tr[data-route="{QUEUED}"]'
    wait_until(driver, lambda d: (text_of(d, queue_row) or "").split()[1:4] == ["0", "0", "2"],
               f"queue row 'pending delivered dead' = 0 0 2 (shows {text_of(driver, queue_row)!r})")
    page = driver.find_element(By.TAG_NAME, "body").text
    for private in ("camp_browser", "Browser test", "example.com/landing"):
        check(private not in page, f"a body field ({private}) shows on the page")
    check(all(status == 400 for i in ids for status in app.lead_statuses(i)),
          "the app did not refuse the events")


def check_replay(driver, side, app, event_id):
    """Replay needs the token; with it the event goes back to pending, is delivered (the app
    now answers 200) and its row goes."""
    click_action(driver, event_id, "replay")
    wait_text(driver, "#action-result", "Type the admin token first.", "replay without the token")
    check(dead_row(driver, event_id) is not None, "the row went without the token")
    driver.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    click_action(driver, event_id, "replay")
    wait_text(driver, "#action-result", f"Replayed {event_id}.", "replay result")
    try:
        wait_until(driver, lambda d: dead_row(d, event_id) is None, "")
    except Failed:
        stored = [e for e in side.events() if e["id"] == event_id]
        raise Failed(f"dead row for {event_id} not gone within {WAIT} s; the row: "
                     f"{dead_row(driver, event_id).text if dead_row(driver, event_id) else None!r}, "
                     f"the store: {stored!r}, the app answered {app.lead_statuses(event_id)}, "
                     f"page problem: {text_of(driver, '#problem')!r}, updated {text_of(driver, '#updated')!r}")
    wait_until(driver, lambda d: 200 in app.lead_statuses(event_id), "the replayed event delivered")
    states = {e["id"]: e["state"] for e in side.events()}
    check(states.get(event_id) == "delivered", f"after the replay the store says {states.get(event_id)!r}")


def check_drop(driver, side, event_id):
    """Drop asks first (the first click arms it), then deletes: the row goes, and the store
    no longer has the event."""
    button = click_action(driver, event_id, "drop")
    check(button.text == "Confirm drop", f"the first click shows {button.text!r}")
    check(dead_row(driver, event_id) is not None, "dropped on the first click")
    button.click()
    wait_text(driver, "#action-result", f"Dropped {event_id}.", "drop result")
    wait_until(driver, lambda d: dead_row(d, event_id) is None, f"dead row for {event_id} gone")
    wait_until(driver, lambda d: d.find_element(By.ID, "no-dead").is_displayed(), "'No dead events.'")
    check(event_id not in {e["id"] for e in side.events()}, "the dropped event is still stored")


def chart_drawn(driver):
    lines = driver.find_elements(By.CSS_SELECTOR, "#chart-svg path.line")
    bars = driver.find_elements(By.CSS_SELECTOR, "#chart-svg rect.bar")
    forwarded = [p.get_attribute("d") for p in lines if "forwarded" in p.get_attribute("class")]
    # Several refreshes: several horizontal steps in the forwarded line.
    return len(lines) == 2 and len(bars) >= 2 and forwarded and forwarded[0].count("H") >= 3


def check_chart(driver, side):
    """After a few refreshes with traffic in between, the chart is drawn as SVG."""
    wait_until(driver, chart_drawn, "chart with two lines and bars over 3 refreshes")
    check(not driver.find_element(By.ID, "chart-empty").is_displayed(),
          "the chart still says it starts at the second refresh")
    label = driver.find_element(By.ID, "chart-svg").get_attribute("aria-label") or ""
    check(label.startswith("forwarded "), f"chart label {label!r}")


def check_headers(side):
    """The page, its assets and the API answers carry the security headers (the CSP the
    browser enforced among them)."""
    for path in ("/", "/console.js", "/console.css", "/api/status", "/api/events"):
        with urllib.request.urlopen(f"{side.admin_url}{path}", timeout=5) as r:
            h = r.headers
        csp = h.get("content-security-policy") or ""
        check("default-src 'none'" in csp and "script-src 'self'" in csp, f"{path}: CSP is {csp!r}")
        check(h.get("x-content-type-options") == "nosniff", f"{path}: no nosniff")
        check(h.get("referrer-policy") == "no-referrer", f"{path}: Referrer-Policy is "
              f"{h.get('referrer-policy')!r}")


def check_browser_log(driver):
    """Nothing the page needs was blocked (no CSP violation) and no script failed."""
    problems = [e["message"] for e in driver.get_log("browser")
                if e.get("level") == "SEVERE" or "Content Security Policy" in e.get("message", "")]
    check(not problems, "the browser logged: " + " | ".join(problems))


def check_csp_enforced(driver):
    """The control for the check above: the browser does enforce the policy, and the log shows a
    violation when there is one. An inline script put into the page is refused and never runs."""
    driver.execute_script("""
        const s = document.createElement('script');
        s.textContent = 'document.body.dataset.inlineRan = "yes"';
        document.body.appendChild(s);
    """)
    ran = driver.execute_script("return document.body.dataset.inlineRan || null")
    check(ran is None, "an inline script ran despite the CSP")
    try:
        WebDriverWait(driver, WAIT).until(lambda d: any(
            "Content Security Policy" in e.get("message", "") for e in d.get_log("browser")))
    except Exception:
        raise Failed("no CSP violation was logged for an injected inline script")


def screenshot(driver, paths):
    """The whole page, below the window's fold too (DevTools' captureBeyondViewport), as PNG
    at each path."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True})
    png = base64.b64decode(shot["data"])
    check(png.startswith(b"\x89PNG"), "the screenshot is no PNG")
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        print(f"     screenshot: {path} ({len(png)} bytes)")


# === the runs ===

class Run:
    """Counts the checks; one failing check does not stop the others."""

    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def check(self, name, fn):
        try:
            note = fn()
            if note and str(note).startswith("skipped"):
                self.skipped += 1
                print(f"SKIP {name}: {note.removeprefix('skipped: ')}")
            else:
                self.passed += 1
                print(f"ok   {name}")
            return True
        except Failed as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
            return False


def signed_traffic(side, forwarded, rejected, tag):
    for n in range(forwarded):
        body = event_body("popup.shown", f"{tag}-ok-{n}")
        status, _ = side.post(body, sign(body))
        check(status == 200, f"signed request: status {status}")
    for n in range(rejected):
        body = event_body("popup.closed", f"{tag}-bad-{n}")
        status, _ = side.post(body, "0" * 64)
        check(status == 401, f"badly signed request: status {status}")


def without_store(binary, workdir, run):
    app = App()
    side = driver = None
    try:
        side = Hookgate(binary, app.port, os.path.join(workdir, "direct"), cert_days=7)
        signed_traffic(side, 2, 1, "direct")
        check(app.count == 2, f"the app got {app.count} requests, want 2")
        driver = browser()
        driver.get(f"{side.admin_url}/")
        run.check("route row: counts, last minute, signature failures",
                  lambda: check_route_counts(driver, side))
        run.check("certificate: subject and names, expiring in 7 days shown red",
                  lambda: check_certificate(driver, f"CN={CERT_CN}", red=True))
        run.check("no store", lambda: check_without_store(driver, side))
        run.check("security headers", lambda: check_headers(side))
        run.check("browser log clean", lambda: check_browser_log(driver))
        run.check("CSP enforced", lambda: check_csp_enforced(driver))
    except Failed as e:
        run.failed += 1
        print(f"FAIL setup (without a store): {e}")
    finally:
        if driver is not None:
            driver.quit()
        if side is not None:
            side.stop()
        app.close()
    return side


def with_store(binary, workdir, run, shots):
    app = App(refuse=2)
    side = driver = None
    try:
        side = Hookgate(binary, app.port, os.path.join(workdir, "store"), store=True)
        ids = []
        for n in range(2):
            body = event_body("popup.shown", f"lead-{n}")
            status, answer = side.post(body, sign(body), QUEUED_PATH)
            check(status == 200 and answer.get("status") == "queued",
                  f"queued event: status {status} {answer!r}")
            ids.append(answer["id"])
        driver = browser()
        driver.get(f"{side.admin_url}/?refresh=1")
        # Traffic between refreshes, so that the chart has something to draw.
        for round_ in range(6):
            signed_traffic(side, 1 + round_ % 3, round_ % 2, f"round{round_}")
            time.sleep(1.1)
        listed = run.check("dead events listed (id, route, event, attempts, last error)",
                           lambda: check_dead_events_listed(driver, side, app, ids))
        run.check("chart drawn (SVG path and rect)", lambda: check_chart(driver, side))
        run.check("certificate: the self-signed one, valid for years, not red",
                  lambda: check_certificate(driver, "CN=", red=False))
        run.check("screenshot", lambda: screenshot(driver, shots))
        if listed:
            run.check("Replay: needs the token, then delivered and gone",
                      lambda: check_replay(driver, side, app, ids[0]))
            run.check("Drop: two clicks, then deleted and gone", lambda: check_drop(driver, side, ids[1]))
        run.check("browser log clean (with a store)", lambda: check_browser_log(driver))
    except Failed as e:
        run.failed += 1
        print(f"FAIL setup (with a store): {e}")
    finally:
        if driver is not None:
            driver.quit()
        if side is not None:
            side.stop()
        app.close()
    return side


def main():
    args = sys.argv[1:]
    shots = [os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"),
                          "browser", "console.png")]
    if "--screenshot" in args:
        i = args.index("--screenshot")
        if i + 1 >= len(args):
            print(__doc__, file=sys.stderr)
            return 2
        shots.append(os.path.abspath(args[i + 1]))
        del args[i:i + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(args[0])
    run = Run()
    workdir = tempfile.mkdtemp(prefix="hookgate-browser-")
    sides = []
    try:
        sides.append(without_store(binary, workdir, run))
        sides.append(with_store(binary, workdir, run, shots))
    finally:
        if run.failed:
            for side in sides:
                if side is None:
                    continue
                with open(side.log.name, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
                # The deliveries, the actions and every warning, then the last lines.
                keep = [line for line in lines[:-15] if any(k in line for k in (
                    "delivery attempt", "admin action", '"WARN"', '"ERROR"'))]
                print(f"--- {side.log.name} ---\n" + "\n".join(keep[-40:] + lines[-15:]))
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{run.passed} passed, {run.failed} failed, {run.skipped} skipped")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
