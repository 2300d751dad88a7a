#!/usr/bin/env python3
"""Faults under load, with nothing lost: a bounded run against the release binary.

Starts target/release/hookgate (or --bin) in front of a recording Python
upstream, and sends signed events from a few threads, as the provider does:
each event has a unique campaign_id, each delivery attempt a unique
"attempt" field (an unknown field, forwarded byte for byte), and a delivery
that does not get 200 is retried with backoff. While the load runs it
injects, one after the other:

  upstream-slow      the app answers after 6 s          -> 504 before 5 s
  upstream-abort     the app reads, then drops the conn -> 502, no hang
  upstream-down      the app's listener is closed ~2 s  -> 502, then recovers
  secret-rotation    new secret added, provider switches, old removed (SIGHUP)
  cert-rotation      the ..data symlink swapped to a new cert/key (SIGHUP)
  sigterm            SIGTERM to hookgate mid-load: exit 0, restarted on the same ports

and checks: every 200 was received by the app exactly once; no attempt was
forwarded twice; every non-200 is retriable (502/503/504 or a connection
error, never a 4xx); every event was eventually delivered (nothing lost);
every extra copy at the app is explained by an attempt that failed after the
app received it; no attempt took longer than the provider's 5 s; hookgate
exited 0 on SIGTERM; RSS stayed flat after warm-up.

Attempts count in the phase they started in, and a fault is injected only
once the previous phase's attempts are answered: no attempt meets the fault
of a later phase than its own (a phase's first attempts may still precede
its fault), and the attempts the slow app holds (504 at upstream.timeout)
do not eat into the next phase. Every check also asserts that what it checks happened (attempts
in the phase, extra copies to explain, requests in flight at SIGTERM), so
none passes vacuously.

Prints a table per phase and "N passed, M failed"; exit status 1 on any
failure. Stdlib only; needs openssl on PATH for the certificates.

    python3 security/faults.py [--bin target/release/hookgate] [--threads 4] [--seconds 6]
    python3 security/faults.py --short      # what CI runs (scripts/test-all.sh)

--short runs every phase and every check, lighter and shorter: 2 provider
threads and 2 s phases (explicit --threads/--seconds still win). What the
checks need is unchanged: the slow app still answers after 6 s against
hookgate's 4 s upstream.timeout and the provider's 5 s, the app is still
down for 2 s, and requests are still held 1 s at the app when SIGTERM
lands. About 30 s instead of about 1 min.
"""
import argparse
import http.client
import http.server
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict

ROUTE = "/webhooks/coolpopup"
DEADLINE = 5.0  # the provider's: an answer later than this is a failure


# === helpers ===

def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run(*cmd, cwd=None):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(d):
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key", cwd=d)
    run("openssl", "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=faults CA", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-out", "ca.pem", cwd=d)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")


def make_leaf(d, name):
    sub = os.path.join(d, name)
    os.makedirs(sub)
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", os.path.join(sub, "tls.key"), cwd=d)
    run("openssl", "req", "-new", "-key", os.path.join(sub, "tls.key"), "-subj", f"/CN=localhost {name}",
        "-out", os.path.join(sub, "tls.csr"), cwd=d)
    run("openssl", "x509", "-req", "-in", os.path.join(sub, "tls.csr"), "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", os.path.join(sub, "tls.crt"), cwd=d)
    with open(os.path.join(sub, "tls.crt"), "rb") as f:
        pem = f.read()
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def swap_symlink(link, target):
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# === the recording upstream ===

class App:
    """The app behind hookgate: records every attempt it receives; its mode
    decides how it answers."""

    def __init__(self, port):
        self.port = port
        self.mode = "ok"  # ok | slow (6 s) | delay (1 s) | abort
        self.active = 0   # requests being handled now
        self.lock = threading.Lock()
        self.received = Counter()       # attempt id -> times received
        self.answered_ok = Counter()    # attempt id -> times answered 200
        self.events = Counter()         # campaign_id -> times received
        self.server = None
        self.thread = None
        self.conns = set()  # open connections, closed when the app "dies"

    def start(self):
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def setup(self):
                super().setup()
                with app.lock:
                    app.conns.add(self.connection)

            def finish(self):
                with app.lock:
                    app.conns.discard(self.connection)
                super().finish()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {}
                attempt, event = doc.get("attempt"), doc.get("campaign_id")
                with app.lock:
                    app.received[attempt] += 1
                    app.events[event] += 1
                    mode = app.mode
                    app.active += 1
                try:
                    self.answer(mode, attempt)
                finally:
                    with app.lock:
                        app.active -= 1

            def answer(self, mode, attempt):
                if mode == "abort":
                    # Read the request, then die without answering.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode in ("slow", "delay"):
                    time.sleep(6 if mode == "slow" else 1)
                payload = b'{"ok":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with app.lock:
                    app.answered_ok[attempt] += 1

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a dropped or timed-out connection is the point here

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        """The app dies: its listener and every open connection close."""
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns, self.conns = list(self.conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# === hookgate ===

class Hookgate:
    def __init__(self, binary, config, admin_port, log):
        self.binary, self.config, self.admin_port, self.log = binary, config, admin_port, log
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([self.binary, "serve", "-c", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"hookgate exited with {self.proc.returncode} at start")
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit("hookgate not ready within 30 s")

    def metric(self, pattern):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=2).read().decode()
        total = 0.0
        for line in text.splitlines():
            if re.match(pattern, line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def reload(self, kind):
        """SIGHUP, then wait (bounded) until the reload of `kind` is counted."""
        series = rf'hookgate_reloads_total\{{(?=[^}}]*kind="{kind}")(?=[^}}]*result="ok")'
        before = self.metric(series)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.metric(series) > before:
                return True
            time.sleep(0.05)
        return False


# === the provider ===

class Provider:
    """Threads that deliver events with retries, as Cool Popup does."""

    def __init__(self, port, cafile, secret, threads):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.secret = secret
        self.threads = threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.phase = "warm-up"
        self.attempts = []       # (phase, event, attempt, status or error, seconds, started)
        self.delivered = {}      # event -> attempt that got 200
        self.in_flight = Counter()  # secret -> attempts in flight signed with it
        self.in_flight_phase = Counter()  # phase -> attempts in flight started in it
        self.workers = []
        self.peer_certs = set()
        self.seq = Counter()

    @staticmethod
    def now():
        """The current time, RFC 3339 (the replay window refuses old events)."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def body(self, event, attempt):
        return json.dumps({
            "event": "popup.converted", "campaign_id": event, "campaign_name": "Faults",
            "timestamp": self.now(),
            "visitor": {"email": "jane@example.com", "fields": {"name": "Jane"}},
            "page_url": "https://yoursite.com/p", "attempt": attempt,
        }, separators=(",", ":")).encode()

    def attempt(self, event, attempt_id):
        with self.lock:
            secret = self.secret
            self.in_flight[secret] += 1
            phase = self.phase
            self.in_flight_phase[phase] += 1
        body = self.body(event, attempt_id)
        sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
        started = time.monotonic()
        try:
            conn = http.client.HTTPSConnection("localhost", self.port, context=self.ctx, timeout=10)
            conn.request("POST", ROUTE, body=body, headers={
                "Content-Type": "application/json", "X-CoolPopup-Signature": sig})
            cert = conn.sock.getpeercert(binary_form=True)
            resp = conn.getresponse()
            resp.read()
            outcome = resp.status
            conn.close()
            with self.lock:
                self.peer_certs.add(hashlib.sha256(cert).hexdigest()[:16])
        except (OSError, http.client.HTTPException) as e:
            outcome = type(e).__name__
        finally:
            with self.lock:
                self.in_flight[secret] -= 1
                self.in_flight_phase[phase] -= 1
        took = time.monotonic() - started
        with self.lock:
            self.attempts.append((phase, event, attempt_id, outcome, took, started))
        return outcome

    def worker(self, n):
        while not self.stop.is_set():
            with self.lock:
                self.seq[n] += 1
                event = f"camp_t{n}_{self.seq[n]}"
            for tries in range(8):
                attempt_id = f"{event}_a{tries}"
                if self.attempt(event, attempt_id) == 200:
                    with self.lock:
                        self.delivered[event] = attempt_id
                    break
                time.sleep(min(0.1 * 2 ** tries, 2.0))

    def start(self):
        for n in range(self.threads):
            t = threading.Thread(target=self.worker, args=(n,), daemon=True)
            t.start()
            self.workers.append(t)

    def finish(self, timeout=60):
        self.stop.set()
        for t in self.workers:
            t.join(timeout)


# === the run ===

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target/release/hookgate"))
    ap.add_argument("--threads", type=int, help="provider threads (default 4; 2 with --short)")
    ap.add_argument("--seconds", type=float, help="length of each phase (default 6; 2 with --short)")
    ap.add_argument("--short", action="store_true",
                    help="every phase and every check, lighter and shorter (CI)")
    args = ap.parse_args()
    if args.threads is None:
        args.threads = 2 if args.short else 4
    if args.seconds is None:
        args.seconds = 2.0 if args.short else 6.0
    if args.threads < 1 or args.seconds <= 0:
        sys.exit("--threads must be >= 1 and --seconds > 0")
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} not found: cargo build --release")

    work = tempfile.mkdtemp(prefix="hookgate-faults-")
    checks = []

    def check(name, ok, detail=""):
        checks.append((name, bool(ok), detail))

    try:
        make_ca(work)
        tls = os.path.join(work, "tls")
        os.makedirs(tls)
        cert_v1 = make_leaf(work, "v1")
        cert_v2 = make_leaf(work, "v2")
        for v in ("v1", "v2"):
            shutil.move(os.path.join(work, v), os.path.join(tls, v))
        swap_symlink(os.path.join(tls, "..data"), "v1")
        for f in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", f), os.path.join(tls, f))
        secret_a, secret_b = b"whsec-faults-A-0123456789", b"whsec-faults-B-9876543210"
        s1, s2 = os.path.join(work, "secret-1"), os.path.join(work, "secret-2")
        for path in (s1, s2):
            with open(path, "wb") as f:
                f.write(secret_a + b"\n")

        port, admin_port, app_port = free_ports(3)
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:{port}"
drain_delay = "500ms"
shutdown_grace = "10s"
[server.tls]
cert_file = "{tls}/tls.crt"
key_file = "{tls}/tls.key"
[admin]
listen = "127.0.0.1:{admin_port}"
[upstream]
url = "http://127.0.0.1:{app_port}"
timeout = "4s"
connect_timeout = "500ms"
[log]
format = "json"
level = "warn"
[reload]
interval = "0s"
[[routes]]
name = "coolpopup"
path = "{ROUTE}"
secret_files = ["{s1}", "{s2}"]
""")
        log = open(os.path.join(work, "hookgate.log"), "wb")
        app = App(app_port)
        app.start()
        hg = Hookgate(args.bin, config, admin_port, log)
        hg.start()
        provider = Provider(port, os.path.join(work, "ca.pem"), secret_a, args.threads)
        provider.start()
        phase_len = args.seconds
        rss = {}

        def phase(name):
            """Start a phase: new attempts count in it; the caller injects the
            fault once this returns, when the previous phase's attempts are
            answered (bounded): none of them meets this phase's fault, and
            the attempts the slow app holds (504 at upstream.timeout) do not
            eat into it."""
            with provider.lock:
                previous, provider.phase = provider.phase, name
            deadline = time.time() + 10
            while provider.in_flight_phase[previous] > 0 and time.time() < deadline:
                time.sleep(0.005)

        # warm-up
        time.sleep(phase_len)
        rss["warm (1st process)"] = rss_kib(hg.proc.pid)

        phase("upstream-slow")
        app.mode = "slow"
        time.sleep(phase_len)
        app.mode = "ok"

        phase("upstream-abort")
        app.mode = "abort"
        time.sleep(phase_len / 2)
        app.mode = "ok"
        time.sleep(phase_len / 2)

        phase("upstream-down")
        app.stop()
        time.sleep(2)
        app.start()
        time.sleep(phase_len)

        phase("secret-rotation")
        with open(s2, "wb") as f:
            f.write(secret_b + b"\n")
        check("secret rotation: new secret loaded (SIGHUP)", hg.reload("secrets"))
        with provider.lock:
            provider.secret = secret_b
        deadline = time.time() + 15
        while provider.in_flight[secret_a] > 0 and time.time() < deadline:
            time.sleep(0.01)
        with open(s1, "wb") as f:
            f.write(secret_b + b"\n")
        check("secret rotation: old secret removed (SIGHUP)", hg.reload("secrets"))
        time.sleep(phase_len)

        phase("cert-rotation")
        swap_symlink(os.path.join(tls, "..data"), "v2")
        check("cert rotation: new certificate loaded (SIGHUP)", hg.reload("tls"))
        time.sleep(phase_len)
        new_fp = hashlib.sha256(cert_v2).hexdigest()[:16]
        check("cert rotation: new connections get the new certificate", new_fp in provider.peer_certs)
        rss["end (1st process)"] = rss_kib(hg.proc.pid)

        phase("sigterm")
        # Make sure requests are in flight (held 1 s at the app) when SIGTERM lands.
        app.mode = "delay"
        deadline = time.time() + 5
        while app.active == 0 and time.time() < deadline:
            time.sleep(0.005)
        sigterm_at = time.monotonic()
        hg.proc.send_signal(signal.SIGTERM)
        app.mode = "ok"
        try:
            code = hg.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            hg.proc.kill()
            code = "hung"
        check("SIGTERM under load: exit 0 within shutdown_grace", code == 0, f"exit {code}")
        hg.start()  # the restarted pod
        time.sleep(phase_len)

        phase("after-restart")
        time.sleep(phase_len)
        rss["warm (2nd process)"] = rss_kib(hg.proc.pid)
        time.sleep(phase_len)
        rss["end (2nd process)"] = rss_kib(hg.proc.pid)

        phase("drain")
        provider.finish()
        check("provider threads finished", not any(t.is_alive() for t in provider.workers))

        # === accounting ===
        attempts = provider.attempts
        by_event = defaultdict(list)
        for a in attempts:
            by_event[a[1]].append(a)
        ok_attempts = [a for a in attempts if a[3] == 200]
        not_once = [a[2] for a in ok_attempts if app.received[a[2]] != 1 or app.answered_ok[a[2]] != 1]
        check("every 200 was received by the app exactly once", not not_once and bool(ok_attempts),
              f"{len(ok_attempts)} answered 200; wrong: {not_once[:5]}")
        dup_forwards = [k for k, v in app.received.items() if v > 1]
        check("no attempt forwarded twice", not dup_forwards and bool(app.received),
              f"{sum(app.received.values())} received; twice: {dup_forwards[:5]}")
        non_200 = [a[3] for a in attempts if a[3] != 200]
        bad = Counter(s for s in non_200 if not (s in (502, 503, 504) or isinstance(s, str)))
        check("every non-200 is retriable (502/503/504 or a connection error)", non_200 and not bad,
              f"{len(non_200)} non-200; not retriable: {dict(bad)}")
        lost = [e for e in by_event if e not in provider.delivered]
        check("nothing lost: every event delivered (with retries)", by_event and not lost,
              f"{len(by_event)} events; undelivered: {lost[:5]}")
        unexplained, extra = [], 0
        for event, n in app.events.items():
            tries = by_event.get(event, [])
            failed_after_receipt = sum(1 for a in tries if a[3] != 200 and app.received[a[2]] > 0)
            extra += max(n - 1, 0)
            if n > 1 + failed_after_receipt:
                unexplained.append(event)
        # The slow and abort phases make extra copies (the app received the
        # attempt, the provider saw 504/502 and retried): none would mean the
        # check had nothing to explain.
        check("every extra copy at the app follows a failed attempt the app had received",
              extra > 0 and not unexplained, f"{extra} extra copies; unexplained: {unexplained[:5]}")
        slow = [(a[0], a[3], round(a[4], 2)) for a in attempts if a[4] > DEADLINE]
        check(f"no attempt took longer than {DEADLINE:.0f} s", attempts and not slow,
              f"longest {max((a[4] for a in attempts), default=0):.2f} s; over: {slow[:5]}")
        in_flight = [a for a in attempts if a[5] < sigterm_at < a[5] + a[4]]
        check("requests in flight at SIGTERM were answered 200",
              in_flight and all(a[3] == 200 for a in in_flight),
              f"{len(in_flight)} in flight: {Counter(a[3] for a in in_flight)}")
        in_phase = lambda p, s: sum(1 for a in attempts if a[0] == p and a[3] == s)
        check("upstream-slow gave 504", in_phase("upstream-slow", 504) > 0)
        check("upstream-abort gave 502", in_phase("upstream-abort", 502) > 0)
        check("upstream-down gave 502", in_phase("upstream-down", 502) > 0)
        for p in ("secret-rotation", "cert-rotation"):
            rows = [a[3] for a in attempts if a[0] == p]
            failures = [s for s in rows if s != 200]
            check(f"{p}: no failed attempt", rows and not failures,
                  f"{len(rows)} attempts; failed: {dict(Counter(failures))}")
        warm, end = rss["warm (2nd process)"], rss["end (2nd process)"]
        check("RSS flat after warm-up (2nd process: end <= warm + 25% + 4 MiB)",
              end <= warm * 1.25 + 4096, f"{warm} -> {end} KiB")
        warm, end = rss["warm (1st process)"], rss["end (1st process)"]
        check("RSS bounded across faults (1st process: end <= warm x 2 + 8 MiB)",
              end <= warm * 2 + 8192, f"{warm} -> {end} KiB")

        # === report ===
        print(f"{'phase':<16} {'attempts':>8} {'200':>6} {'502':>5} {'504':>5} {'conn err':>8} {'other':>6} {'max s':>6}")
        order = ["warm-up", "upstream-slow", "upstream-abort", "upstream-down", "secret-rotation",
                 "cert-rotation", "sigterm", "after-restart", "drain"]
        for p in order:
            rows = [a for a in attempts if a[0] == p]
            if not rows:
                continue
            c = Counter(a[3] for a in rows)
            conn_err = sum(v for k, v in c.items() if isinstance(k, str))
            other = sum(v for k, v in c.items() if not isinstance(k, str) and k not in (200, 502, 504))
            print(f"{p:<16} {len(rows):>8} {c[200]:>6} {c[502]:>5} {c[504]:>5} {conn_err:>8} {other:>6} "
                  f"{max(a[4] for a in rows):>6.2f}")
        errors = Counter((a[0], a[3]) for a in attempts if isinstance(a[3], str))
        if errors:
            print("connection errors: " + ", ".join(f"{p}: {n} x {e}" for (p, e), n in sorted(errors.items())))
        print(f"events: {len(by_event)}, delivered: {len(provider.delivered)}, "
              f"attempts: {len(attempts)}, received by the app: {sum(app.received.values())}")
        print("RSS (KiB): " + ", ".join(f"{k} {v}" for k, v in rss.items()))
        print()
        for name, ok, detail in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  [{detail}]" if detail else ""))
        failed = sum(1 for c in checks if not c[1])
        print(f"\n{len(checks) - failed} passed, {failed} failed")
        hg.proc.send_signal(signal.SIGTERM)
        hg.proc.wait(timeout=20)
        app.stop()
        return 1 if failed else 0
    finally:
        for p in [getattr(locals().get("hg"), "proc", None)]:
            if p and p.poll() is None:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
