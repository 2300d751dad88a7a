#!/usr/bin/env python3
"""Small clients for benches/load/memory.sh (stdlib only).

  clients.py hold PORT N BODY SIG PIDFILE...
      Opens N TLS 1.3 connections to 127.0.0.1:PORT, sends one signed POST on
      each (HTTP/1.1 keep-alive) and checks it got a 200, then, with all N
      connections still open, prints each server process's VmRSS/VmHWM (KiB)
      and closes them.
  clients.py startup RUNS ADMIN_PORT -- COMMAND...
      Starts COMMAND RUNS times; each time measures exec -> GET /readyz = 200
      on 127.0.0.1:ADMIN_PORT (polled every 1 ms), then SIGTERMs it and
      waits. Prints the times in ms.
"""

import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def hold(port, n, body_path, sig, *pids):
    port, n = int(port), int(n)
    body = open(body_path, "rb").read()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    request = (
        b"POST /webhooks/coolpopup HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n"
        + f"X-CoolPopup-Signature: {sig}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    conns = []
    t0 = time.monotonic()
    for _ in range(n):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conns.append(ctx.wrap_socket(raw, server_hostname="localhost"))
    t1 = time.monotonic()
    for c in conns:
        c.sendall(request)
    for i, c in enumerate(conns):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                sys.exit(f"connection {i} closed before its answer")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            status_line = head.split(b"\r\n", 1)[0]
            sys.exit(f"connection {i}: {status_line!r}")
        # The whole answer is small; drain its body (Content-Length or chunked).
        rest = head.split(b"\r\n\r\n", 1)[1]
        length = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length is not None:
            while len(rest) < length:
                rest += c.recv(4096)
        else:
            while not rest.endswith(b"0\r\n\r\n"):
                rest += c.recv(4096)
    t2 = time.monotonic()
    time.sleep(0.5)  # let the server settle (allocator, lazily freed buffers)
    for pid in pids:
        print(f"pid={pid} rss_kib={status(pid, 'VmRSS')} hwm_kib={status(pid, 'VmHWM')} "
              f"open={n} handshake_s={t1 - t0:.2f} requests_s={t2 - t1:.2f}")
    for c in conns:
        c.close()


def ready(admin_port):
    try:
        with socket.create_connection(("127.0.0.1", admin_port), timeout=0.5) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def startup(runs, admin_port, sep, *command):
    assert sep == "--"
    runs, admin_port = int(runs), int(admin_port)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = t0 + 10
        while not ready(admin_port):
            if time.perf_counter() > deadline or p.poll() is not None:
                p.kill()
                sys.exit(f"not ready within 10 s (exit status {p.poll()})")
            time.sleep(0.001)
        times.append((time.perf_counter() - t0) * 1000)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            sys.exit("did not stop within 10 s of SIGTERM")
    print(f"median_ms={statistics.median(times):.1f} min_ms={min(times):.1f} "
          f"max_ms={max(times):.1f} runs={runs} all_ms={','.join(f'{t:.1f}' for t in times)}")


if __name__ == "__main__":
    {"hold": hold, "startup": startup}[sys.argv[1]](*sys.argv[2:])
    sys.stdout.flush()
    os._exit(0)
