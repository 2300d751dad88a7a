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
