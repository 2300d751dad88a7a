# shellcheck shell=bash
# Setup shared by the benchmark scripts; sourced, never run:
#
#   BENCH=load/run.sh; . "$ROOT/benches/common.sh"
#   need_tools wrk=wrk openssl=openssl initdb=postgresql
#   WORK=$(mktemp -d ...); bench_cleanup_on_exit
#   PIDS+=($!)
#
# log/die: messages on stderr, prefixed with [$BENCH].
# need_tools CMD=PACKAGE...: installs the Debian packages of the commands
#   missing from PATH (`initdb` means the PostgreSQL server binaries, which
#   are not on PATH).
# bench_cleanup_on_exit: on exit, stops every process in PIDS (TERM, then
#   KILL after 0.3 s), runs `bench_cleanup_extra` if the script defines
#   it (between the two), and removes $WORK.

log() { printf '[%s] %s\n' "$BENCH" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

need_tools() {
    local spec cmd missing=()
    for spec in "$@"; do
        cmd=${spec%%=*}
        if [ "$cmd" = initdb ]; then
            compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && continue
        else
            command -v "$cmd" >/dev/null && continue
        fi
        missing+=("${spec#*=}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        timeout 300 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

PIDS=()
bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
bench_cleanup_on_exit() { trap bench_cleanup EXIT; }

# free_ports N: N loopback ports free right now (each bound to port 0, then
# released), on one line: read -r A B < <(free_ports 2).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# self_signed_cert: a throwaway ECDSA P-256 certificate for localhost and
# 127.0.0.1 in $WORK/cert.pem, its key in $WORK/key.pem.
self_signed_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
}

# wait_http URL [LOG]: waits up to $WAIT_HTTP_S seconds (default 10) for URL
# to answer 200 (any certificate), else dies, quoting LOG's last lines.
wait_http() {
    local tries=$(( ${WAIT_HTTP_S:-10} * 20 ))
    for _ in $(seq 1 "$tries"); do
        if curl -skf --max-time 1 -o /dev/null "$1"; then return 0; fi
        sleep 0.05
    done
    die "$1 did not answer 200 within ${WAIT_HTTP_S:-10} s${2:+: $(tail -5 "$2" | tr "\n" " ")}"
}

# bench_hookgate_toml FILE SERVER_EXTRA ROUTE_EXTRA [TABLES]: the benchmarks'
# hookgate config: TLS 1.3 on $HG_PORT with $WORK/cert.pem, admin on
# $HG_ADMIN, the app at $HG_UPSTREAM_URL (default http://127.0.0.1:$UP_PORT),
# JSON logs at level $HG_LOG_LEVEL (default info), and route "coolpopup" on
# /webhooks/coolpopup signed with $WORK/secret. SERVER_EXTRA and ROUTE_EXTRA
# are lines added to [server] and to the route, TABLES more tables
# ([store], [dedup], ...); each may be empty. The variables may be set for
# one call: HG_PORT=... bench_hookgate_toml ...
bench_hookgate_toml() {
    cat > "$1" <<EOT
[server]
listen = "127.0.0.1:$HG_PORT"
$2
[server.tls]
cert_file = "$WORK/cert.pem"
key_file = "$WORK/key.pem"
min_version = "1.3"
[admin]
listen = "127.0.0.1:$HG_ADMIN"
[upstream]
url = "${HG_UPSTREAM_URL:-http://127.0.0.1:$UP_PORT}"
[log]
format = "json"
level = "${HG_LOG_LEVEL:-info}"
${4:-}
[[routes]]
name = "coolpopup"
path = "/webhooks/coolpopup"
secret_files = ["$WORK/secret"]
$3
EOT
}

# bench_nginx_conf FILE ACCESS_LOG [LOCATIONS]: nginx, 1 worker, TLS 1.3 on
# $NGINX_PORT with $WORK/cert.pem, proxying /webhooks/coolpopup to
# 127.0.0.1:$UP_PORT over a keep-alive pool with the X-Forwarded-* and
# X-Request-Id headers hookgate sets (the plain TLS reverse proxy hookgate
# is compared with). ACCESS_LOG: a path, or "off". LOCATIONS: more
# `location` blocks for the server. Temporary files go under $WORK/nginx-tmp.
bench_nginx_conf() {
    mkdir -p "$WORK/nginx-tmp"
    cat > "$1" <<EOT
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log $2;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    upstream app {
        server 127.0.0.1:$UP_PORT;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.3;
        location = /webhooks/coolpopup {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Request-Id \$request_id;
        }
${3:-}
    }
}
EOT
}

# bench_post_lua FILE BODY SIG: a wrk script POSTing the file BODY with
# X-CoolPopup-Signature SIG; at the end it prints one line
# "RESULT requests=N duration_us=N status=N connect=N read=N write=N timeout=N p50_us=N p99_us=N"
# (status: non-2xx/3xx answers; connect..timeout: socket errors; wrk's
# own latency percentiles, closed loop).
bench_post_lua() {
    {
        cat <<EOT
wrk.method = "POST"
local f = io.open("$2", "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-CoolPopup-Signature"] = "$3"
EOT
        bench_lua_done
    } > "$1"
}

# bench_lua_done: the `done` function of the wrk scripts here, which prints
# bench_post_lua's RESULT line (read by wrk_result).
bench_lua_done() {
    cat <<'EOT'
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
EOT
}

# bench_mix_lua FILE HG_BIN SECRET_FILE CONVERTED_SIZE: signed bodies of all
# four events in $WORK/mix-*.json, in about the proportions a popup sends
# them (shown x4, clicked x2, converted, closed per 8 requests; the
# converted one CONVERTED_SIZE bytes, the others 200-260), and a wrk script
# FILE cycling through them, ending with bench_lua_done (the RESULT line).
bench_mix_lua() {
    local file=$1 bin=$2 secret=$3 b
    python3 "$ROOT/benches/load/body.py" "$WORK/mix-converted.json" "$4"
    python3 - "$WORK" <<'PY'
import json, sys, time
now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
base = {"campaign_id": "camp_mix42", "campaign_name": "Spring Newsletter", "timestamp": now,
        "page_url": "https://shop.example/blog/spring?utm_source=popup"}
for name, extra in (("shown", {}), ("clicked", {"visitor": {"fields": {"button": "Subscribe"}}}),
                    ("closed", {"reason": "dismissed", "seconds_open": 4.5})):
    with open(f"{sys.argv[1]}/mix-{name}.json", "w") as f:
        f.write(json.dumps({"event": f"popup.{name}", **base, **extra}, separators=(",", ":")))
PY
    local -A sig
    for b in shown clicked converted closed; do
        sig[$b]=$("$bin" sign --secret-file "$secret" "$WORK/mix-$b.json")
    done
    {
        echo 'local bodies, sigs = {}, {}'
        for b in shown shown shown shown clicked clicked converted closed; do
            printf 'bodies[#bodies + 1] = io.open("%s", "rb"):read("*a"); sigs[#sigs + 1] = "%s"\n' \
                "$WORK/mix-$b.json" "${sig[$b]}"
        done
        cat <<'LUA'
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["X-CoolPopup-Signature"] = sigs[i]}, bodies[i])
end
LUA
        bench_lua_done
    } > "$file"
}

# wrk_result LABEL OUTPUT: reads the RESULT line of a bench_post_lua script
# from wrk's OUTPUT into WRK_REQUESTS, WRK_DURATION_US, WRK_P50_US and
# WRK_P99_US. Dies, naming LABEL, when there is no such line, on any answer
# that is not 2xx/3xx (a 401, a 503 store_unavailable), on any socket error,
# and when no request completed. Call it as a command, not in $(...): the
# variables are its result, and its die has to end the script.
# shellcheck disable=SC2034 # the WRK_* variables are read by the scripts sourcing this
wrk_result() {
    local label=$1 out=$2 line status errs
    local re='requests=([0-9]+) duration_us=([0-9]+) status=([0-9]+) connect=([0-9]+) read=([0-9]+) write=([0-9]+) timeout=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+)'
    line=$(grep '^RESULT' <<< "$out") || die "$label: no wrk result: $out"
    [[ $line =~ $re ]] || die "$label: unreadable wrk result: $line"
    WRK_REQUESTS=${BASH_REMATCH[1]}
    WRK_DURATION_US=${BASH_REMATCH[2]}
    WRK_P50_US=${BASH_REMATCH[8]}
    WRK_P99_US=${BASH_REMATCH[9]}
    status=${BASH_REMATCH[3]}
    errs="${BASH_REMATCH[4]} ${BASH_REMATCH[5]} ${BASH_REMATCH[6]} ${BASH_REMATCH[7]}"
    # (wrk's own "Non-2xx or 3xx responses" line is this same count.)
    [ "$status" = 0 ] || die "$label: $status answers not 2xx/3xx (a 401? a 503 store_unavailable?)"
    [ "$errs" = "0 0 0 0" ] || die "$label: socket errors (connect read write timeout) $errs"
    [ "$WRK_REQUESTS" -gt 0 ] || die "$label: no request completed"
}

# upstream_count: the requests the bench upstream (examples/bench_upstream)
# on $UP_PORT has received.
upstream_count() { curl -sf --max-time 2 "http://127.0.0.1:$UP_PORT/count"; }

# queue_events ADMIN_PORT STATE: the events in STATE (pending, delivered,
# dead) over every route, from the sidecar's hookgate_queue_events gauges
# (refreshed every second); 0 when there are none. A failed scrape prints
# nothing and fails (piped into awk it printed 0, a count it never read).
queue_events() {
    local metrics
    metrics=$(curl -sf --max-time 2 "http://127.0.0.1:$1/metrics") || return 1
    awk -v s="$2" '/^hookgate_queue_events\{/ && $0 ~ "state=\"" s "\"" {n += $2} END {print n + 0}' <<< "$metrics"
}

# cpu_ticks PID...: utime + stime of the processes, in clock ticks.
cpu_ticks() {
    local u s
    read -r u s <<< "$(cpu_ticks_split "$@")"
    echo $((u + s))
}

# cpu_ticks_split PID...: "utime stime" of the processes (user space, the
# kernel), in clock ticks.
cpu_ticks_split() {
    local u=0 s=0 p pu ps
    for p in "$@"; do
        read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat")
        u=$((u + pu)); s=$((s + ps))
    done
    echo "$u $s"
}
