#!/usr/bin/env python3
"""The admin console in a real browser: headless Chromium driven by Selenium.

    python3 tests/browser/console.py target/release/hookgate

Starts the binary with a throwaway config (self-signed TLS, loopback ports, a recording
app), sends signed requests, opens http://127.0.0.1:<admin>/ and waits (WebDriverWait, no
fixed sleeps) until the route's row shows the counts. Then it checks that the browser
logged nothing: no Content-Security-Policy violation (so the CSP blocks nothing the page
needs) and no script error. Exits non-zero on any failure.

Needs Debian's `chromium` and `chromium-driver` (paths from $CHROMIUM / $CHROMEDRIVER, else
PATH) and `pip install selenium`; the driver is never downloaded.
"""

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
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SECRET = b"whsec-browser-test-0123456789"
ROUTE = "coolpopup"
PATH = "/webhooks/coolpopup"
WAIT = 20  # seconds WebDriverWait gives the page to show something


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
    """The upstream app: answers 200 to every POST and counts them."""

    def __init__(self):
        self.count = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.count += 1
                body = b'{"ok":true}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Hookgate:
    """The binary under test with a config of its own in a temporary directory."""

    def __init__(self, binary, app_port, workdir):
        self.port, self.admin_port = free_port(), free_port()
        secret = os.path.join(workdir, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET + b"\n")
        config = os.path.join(workdir, "config.toml")
        with open(config, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:{self.port}"
[server.tls]
self_signed = true
[admin]
listen = "127.0.0.1:{self.admin_port}"
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
""")
        self.log = open(os.path.join(workdir, "hookgate.log"), "wb")
        # Only what the binary needs: a HOOKGATE_* variable would be read as config.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
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

    def post(self, body, signature):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the throwaway self-signed certificate
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{PATH}", data=body, method="POST",
                                     headers={"content-type": "application/json",
                                              "x-coolpopup-signature": signature})
        try:
            with urllib.request.urlopen(req, timeout=10, context=context) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

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


def text_of(driver, css):
    """The element's text, or None while it is not there (for WebDriverWait)."""
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else None


def wait_text(driver, css, want, what):
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text_of(d, css) == want)
    except Exception:
        raise Failed(f"{what}: {css} shows {text_of(driver, css)!r}, want {want!r} within {WAIT} s")


# === the checks ===

def check_route_counts(driver, side):
    """The route's row appears with its counts by outcome and its latencies."""
    row = f'#routes tr[data-route="{ROUTE}"]'
    wait_text(driver, f'{row} .outcome[data-outcome="forwarded"] .count', "2", "forwarded count")
    wait_text(driver, f'{row} .outcome[data-outcome="invalid_signature"] .count', "1",
              "invalid_signature count")
    wait_text(driver, f"{row} td.total", "3", "total")
    for cell in ("p50", "p99"):
        value = text_of(driver, f"{row} td.{cell}")
        check(value and value.endswith(("ms", " s")), f"{cell} shows {value!r}")
    check(text_of(driver, "#version") not in (None, ""), "no version shown")
    check((text_of(driver, "#certificate") or "").startswith("expires"),
          f"certificate shows {text_of(driver, '#certificate')!r}")
    check(text_of(driver, "#ready") == "yes", f"ready shows {text_of(driver, '#ready')!r}")


def check_without_store(driver, side):
    """Without a [store] the page says so and shows no queue or dead events."""
    WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "no-store").is_displayed())
    check(not driver.find_element(By.ID, "store").is_displayed(), "the queue section is shown")


def check_dead_events_replay_and_drop(driver, side):
    """Replay and Drop of dead events from the page.

    Needs a [store] and a queued route whose app refuses events (so they die); to be written
    when the store lands: make two events die, wait for their rows in `#dead tr[data-id=...]`,
    type the token in `#token` if `admin.token_file` is set, click the row's
    `button[data-action="replay"]` (one click) and `button[data-action="drop"]` (two clicks:
    the first arms it), and wait for `#action-result` and the rows to change.
    """
    return "skipped: this build has no store"


def check_headers(side):
    """The page is served with the CSP the browser enforced."""
    with urllib.request.urlopen(f"{side.admin_url}/", timeout=5) as r:
        csp = r.headers.get("content-security-policy") or ""
    check("default-src 'none'" in csp and "script-src 'self'" in csp, f"CSP is {csp!r}")


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


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    passed, failed, skipped = 0, 0, 0
    workdir = tempfile.mkdtemp(prefix="hookgate-browser-")
    app = App()
    side = driver = None
    try:
        side = Hookgate(binary, app.port, workdir)
        for n, event in enumerate(["popup.shown", "popup.clicked"]):
            body = event_body(event, n)
            status = side.post(body, sign(body))
            check(status == 200, f"signed {event}: status {status}")
        body = event_body("popup.closed", 9)
        status = side.post(body, "0" * 64)
        check(status == 401, f"badly signed request: status {status}")
        check(app.count == 2, f"the app got {app.count} requests, want 2")

        driver = browser()
        driver.get(f"{side.admin_url}/")
        checks = [
            ("route row with counts", lambda: check_route_counts(driver, side)),
            ("no store", lambda: check_without_store(driver, side)),
            ("dead events replay and drop", lambda: check_dead_events_replay_and_drop(driver, side)),
            ("CSP header", lambda: check_headers(side)),
            ("browser log clean", lambda: check_browser_log(driver)),
            ("CSP enforced", lambda: check_csp_enforced(driver)),
        ]
        for name, fn in checks:
            try:
                note = fn()
                if note and note.startswith("skipped"):
                    skipped += 1
                    print(f"SKIP {name}: {note.removeprefix('skipped: ')}")
                else:
                    passed += 1
                    print(f"ok   {name}")
            except Failed as e:
                failed += 1
                print(f"FAIL {name}: {e}")
    except Failed as e:
        failed += 1
        print(f"FAIL setup: {e}")
    finally:
        if driver is not None:
            driver.quit()
        if side is not None:
            side.stop()
            if failed:
                with open(os.path.join(workdir, "hookgate.log"), "rb") as f:
                    tail = f.read()[-3000:].decode(errors="replace")
                print("--- hookgate log (tail) ---\n" + tail)
        app.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
