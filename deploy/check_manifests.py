#!/usr/bin/env python3
"""Offline checks of hookgate's deployment files, driven by deploy/check.sh.

Each sub-command prints what it checked, prints every problem it finds (not
only the first) and exits 1 if there was any. Needs PyYAML and
kubernetes-validate (check.sh installs them); Python >= 3.11 for tomllib.

  validate  FILE...            Kubernetes schemas (strict, offline) for built-in
                               kinds; basic shape for the CRDs cert-manager and
                               the Prometheus Operator add (their schemas are not
                               shipped with kubernetes-validate).
  render    KUSTOMIZE_DIR      fallback renderer, used only when no kustomize
                               binary can be had: resources, configMapGenerator
                               (without the hash suffix), images, labels and
                               strategic-merge patches with a target.
  overlay   BASE_DIR OUT_DIR   write a throwaway overlay that applies
                               sidecar-patch.yaml to a sample Deployment.
  patched   RENDERED           check that overlay's output: app untouched,
                               hookgate sidecar and volumes added.
  drift     BASE_DIR           the hookgate container and volumes in
                               sidecar-patch.yaml equal those in deployment.yaml.
  policy    RENDERED CONFIG    the rendered base against the deployment contract
                               (ports, probes, mounts, security, grace period).
  dockerfile FILE              the image contract (stages, user, entrypoint...).
  free-port                    print a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import sys
import tomllib

import yaml

# CRDs we ship manifests for: apiVersion each must use, and the spec fields
# without which the object is useless.
CRD_SHAPES = {
    "Issuer": ("cert-manager.io/v1", []),
    "ClusterIssuer": ("cert-manager.io/v1", []),
    "Certificate": ("cert-manager.io/v1", ["secretName", "issuerRef"]),
    "PodMonitor": ("monitoring.coreos.com/v1", ["selector", "podMetricsEndpoints"]),
    "ServiceMonitor": ("monitoring.coreos.com/v1", ["selector", "endpoints"]),
}

SAMPLE_APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: existing-app
  labels:
    app.kubernetes.io/name: existing-app
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: existing-app
  template:
    metadata:
      labels:
        app.kubernetes.io/name: existing-app
    spec:
      containers:
        - name: web
          image: registry.example.com/existing-app:7.3
          args: ["--listen", "127.0.0.1:8080"]
          volumeMounts:
            - name: cache
              mountPath: /var/cache/app
      volumes:
        - name: cache
          emptyDir: {}
"""


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def check(self, cond: bool, msg: str) -> None:
        if not cond:
            self.add(msg)

    def finish(self, ok_msg: str) -> int:
        for p in self.items:
            print(f"  problem: {p}")
        if self.items:
            return 1
        print(f"  {ok_msg}")
        return 0


def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def dig(obj, *keys, default=None):
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and k < len(obj):
            obj = obj[k]
        else:
            return default
    return obj


def by_name(items) -> dict:
    return {i.get("name"): i for i in (items or []) if isinstance(i, dict)}


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, rest = 0.0, text.strip()
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*(ms|s|m|h))+\s*", rest):
        raise ValueError(f"cannot parse duration {text!r}")
    return total


# --------------------------------------------------------------- validate --

def schema_errors(doc: dict, version: str) -> list[str]:
    """Every strict-schema violation of `doc`, using kubernetes-validate's
    bundled schemas; falls back to its public validate() (first error only)
    if its internals ever move."""
    import kubernetes_validate
    try:
        import jsonschema
        from referencing import Registry, Resource
        from kubernetes_validate import utils as kv

        schema_version = [v for v in kv.all_versions()
                          if kv.major_minor(v) <= kv.major_minor(version)][-1]
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
        base = f"kubernetes-json-schema/v{schema_version}-local-strict"
        schema = kv.schema_contents(f"{base}/{doc['kind'].lower()}-{api}.json", version)
        defs = kv.schema_contents(f"{base}/_definitions.json", version)
        registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
        return ["/".join(map(str, e.path)) + ": " + e.message for e in errors]
    except (AttributeError, ImportError, TypeError):
        pass
    except FileNotFoundError:
        return [f"no schema for {doc.get('kind')} {doc.get('apiVersion')} in k8s {version}"]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return ["/".join(map(str, e.path)) + ": " + e.message]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]


def cmd_validate(version: str, files: list[str]) -> int:

    probs = Problems()
    count = 0
    for path in files:
        for doc in load_docs(path):
            count += 1
            kind = doc.get("kind", "?")
            name = dig(doc, "metadata", "name", default="?")
            where = f"{os.path.basename(path)}: {kind}/{name}"
            if kind in CRD_SHAPES:
                api, required = CRD_SHAPES[kind]
                probs.check(doc.get("apiVersion") == api,
                            f"{where}: apiVersion {doc.get('apiVersion')!r}, want {api!r}")
                probs.check(isinstance(name, str) and name != "?",
                            f"{where}: metadata.name missing")
                spec = doc.get("spec")
                probs.check(isinstance(spec, dict), f"{where}: spec missing")
                for key in required:
                    probs.check(isinstance(spec, dict) and key in spec,
                                f"{where}: spec.{key} missing")
                print(f"  shape  {where} (CRD: basic shape only)")
                continue
            errors = schema_errors(doc, version)
            for err in errors:
                probs.add(f"{where}: {err}")
            if not errors:
                print(f"  schema {where} (k8s {version}, strict)")
    probs.check(count > 0, "no documents found")
    return probs.finish(f"{count} object(s) valid")


# ----------------------------------------------------------------- render --

def strategic_merge(base, patch):
    """Enough of Kubernetes' strategic merge for our patches: maps merge
    recursively, lists of named maps merge by `name`, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        out = [copy.deepcopy(i) for i in base]
        index = {i["name"]: n for n, i in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                n = index[item["name"]]
                out[n] = strategic_merge(out[n], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def matches(doc: dict, target: dict) -> bool:
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    checks = {
        "kind": doc.get("kind"),
        "name": dig(doc, "metadata", "name"),
        "group": group,
        "version": version,
    }
    for key, want in target.items():
        if key in checks and checks[key] != want:
            return False
        if key not in checks:
            raise SystemExit(f"fallback renderer: unsupported target key {key!r}")
    return True


def cmd_render(base: str) -> int:
    kust = yaml.safe_load(open(os.path.join(base, "kustomization.yaml"), encoding="utf-8"))
    supported = {"apiVersion", "kind", "resources", "configMapGenerator",
                 "patches", "images", "labels"}
    extra = set(kust) - supported
    if extra:
        raise SystemExit(f"fallback renderer: unsupported kustomization fields {sorted(extra)}")
    docs: list[dict] = []
    for res in kust.get("resources", []):
        docs.extend(load_docs(os.path.join(base, res)))
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.partition("=") if "=" in f else (os.path.basename(f), "", f)
            data[key] = open(os.path.join(base, src or f), encoding="utf-8").read()
        docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    for p in kust.get("patches", []):
        patch = yaml.safe_load(open(os.path.join(base, p["path"]), encoding="utf-8"))
        target = p.get("target")
        for n, doc in enumerate(docs):
            if target is not None:
                hit = matches(doc, target)
            else:
                hit = (doc.get("kind") == patch.get("kind")
                       and dig(doc, "metadata", "name") == dig(patch, "metadata", "name"))
            if hit:
                merged = strategic_merge(doc, {k: v for k, v in patch.items()
                                               if k != "metadata"})
                docs[n] = merged
    for img in kust.get("images", []):
        for doc in docs:
            spec = dig(doc, "spec", "template", "spec") or {}
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                repo = c.get("image", "").rsplit(":", 1)[0]
                if repo == img["name"]:
                    c["image"] = f"{img.get('newName', repo)}:{img['newTag']}"
    for lab in kust.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(lab["pairs"])
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    return 0


# ---------------------------------------------------------------- overlay --

def cmd_overlay(base: str, out: str) -> int:
    os.makedirs(out, exist_ok=True)
    shutil.copy(os.path.join(base, "sidecar-patch.yaml"), out)
    shutil.copy(os.path.join(base, "config.toml"), out)
    with open(os.path.join(out, "existing-app.yaml"), "w", encoding="utf-8") as f:
        f.write(SAMPLE_APP)
    # The same shape as the overlay documented in deploy/README.md.
    with open(os.path.join(out, "kustomization.yaml"), "w", encoding="utf-8") as f:
        f.write("""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - existing-app.yaml
configMapGenerator:
  - name: hookgate-config
    files:
      - config.toml
patches:
  - path: sidecar-patch.yaml
    target:
      group: apps
      version: v1
      kind: Deployment
      name: existing-app
""")
    print(f"  overlay written to {out}")
    return 0


def cmd_patched(rendered: str) -> int:
    probs = Problems()
    docs = load_docs(rendered)
    deps = [d for d in docs if d.get("kind") == "Deployment"]
    probs.check(len(deps) == 1, f"want 1 Deployment, got {len(deps)}")
    if not deps:
        return probs.finish("")
    dep = deps[0]
    spec = dig(dep, "spec", "template", "spec")
    probs.check(dig(dep, "metadata", "name") == "existing-app",
                f"Deployment renamed to {dig(dep, 'metadata', 'name')!r}: the patch's "
                "placeholder name leaked")
    containers = by_name(spec.get("containers"))
    probs.check(list(containers) == ["web"], f"app containers changed: {list(containers)}")
    probs.check(dig(containers, "web", "image") == "registry.example.com/existing-app:7.3",
                "app container image changed")
    hg = by_name(spec.get("initContainers")).get("hookgate")
    probs.check(hg is not None, "no hookgate init container after patching")
    probs.check(dig(hg, "restartPolicy") == "Always", "hookgate is not a native sidecar")
    vols = by_name(spec.get("volumes"))
    for v in ("cache", "hookgate-config", "coolpopup-webhook-secret", "hookgate-tls"):
        probs.check(v in vols, f"volume {v} missing after patching")
    cm = dig(vols, "hookgate-config", "configMap", "name", default="")
    cms = [dig(d, "metadata", "name") for d in docs if d.get("kind") == "ConfigMap"]
    probs.check(cm in cms, f"volume refers to ConfigMap {cm!r}, rendered: {cms}")
    return probs.finish("patch adds the sidecar and keeps the app intact")


def cmd_drift(base: str) -> int:
    probs = Problems()
    dep = load_docs(os.path.join(base, "deployment.yaml"))[0]
    patch = load_docs(os.path.join(base, "sidecar-patch.yaml"))[0]
    dspec = dig(dep, "spec", "template", "spec")
    pspec = dig(patch, "spec", "template", "spec")
    d_hg = by_name(dspec.get("initContainers")).get("hookgate")
    p_hg = by_name(pspec.get("initContainers")).get("hookgate")
    probs.check(d_hg is not None and d_hg == p_hg,
                "hookgate container differs between deployment.yaml and sidecar-patch.yaml")
    dvols, pvols = by_name(dspec.get("volumes")), by_name(pspec.get("volumes"))
    for name in pvols:
        probs.check(dvols.get(name) == pvols[name],
                    f"volume {name} differs between deployment.yaml and sidecar-patch.yaml")
    probs.check(set(pvols) == {"hookgate-config", "coolpopup-webhook-secret", "hookgate-tls"},
                f"patch volumes: {sorted(pvols)}")
    probs.check(dspec.get("terminationGracePeriodSeconds")
                == pspec.get("terminationGracePeriodSeconds"),
                "terminationGracePeriodSeconds differs")
    return probs.finish("sidecar-patch.yaml matches deployment.yaml")


# ----------------------------------------------------------------- policy --

def cmd_policy(rendered: str, config_path: str) -> int:
    probs = Problems()
    cfg = tomllib.load(open(config_path, "rb"))
    docs = load_docs(rendered)
    kinds = {}
    for d in docs:
        kinds.setdefault(d.get("kind"), []).append(d)

    def port_of(addr: str) -> int:
        return int(addr.rsplit(":", 1)[1])

    https_port = port_of(cfg["server"]["listen"])
    admin_port = port_of(cfg["admin"]["listen"])
    probs.check(cfg["admin"]["listen"].startswith("0.0.0.0:"),
                "admin.listen must be 0.0.0.0:PORT so kubelet probes reach it")
    probs.check(cfg["upstream"]["url"].startswith("http://127.0.0.1:"),
                "upstream.url must stay on loopback")

    # ConfigMap from the generator carries exactly config.toml.
    cms = kinds.get("ConfigMap", [])
    probs.check(len(cms) == 1 and dig(cms[0], "data", "config.toml")
                == open(config_path, encoding="utf-8").read(),
                "rendered ConfigMap does not carry config.toml verbatim")
    cm_name = dig(cms, 0, "metadata", "name", default="")

    dep = (kinds.get("Deployment") or [{}])[0]
    spec = dig(dep, "spec", "template", "spec", default={})
    hg = by_name(spec.get("initContainers")).get("hookgate") or {}
    probs.check(hg.get("restartPolicy") == "Always",
                "hookgate must be an initContainer with restartPolicy Always")
    ports = {p["name"]: p["containerPort"] for p in hg.get("ports", [])}
    probs.check(ports.get("https") == https_port, f"containerPort https != {https_port}")
    probs.check(ports.get("admin") == admin_port, f"containerPort admin != {admin_port}")
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")):
        probs.check(dig(hg, probe, "httpGet", "path") == path
                    and dig(hg, probe, "httpGet", "port") in ("admin", admin_port),
                    f"{probe} must be httpGet {path} on the admin port")
    sc = hg.get("securityContext", {})
    for key, want in (("runAsNonRoot", True), ("runAsUser", 65532), ("runAsGroup", 65532),
                      ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
        probs.check(sc.get(key) == want, f"securityContext.{key} != {want}")
    probs.check(dig(sc, "capabilities", "drop") == ["ALL"], "capabilities must drop ALL")
    probs.check(dig(sc, "seccompProfile", "type") == "RuntimeDefault",
                "seccompProfile must be RuntimeDefault")
    for key in ("requests", "limits"):
        for res in ("cpu", "memory"):
            probs.check(dig(hg, "resources", key, res) is not None,
                        f"resources.{key}.{res} missing")
    pre = dig(hg, "lifecycle", "preStop", "sleep", "seconds")
    probs.check(isinstance(pre, int), "hookgate preStop must use the sleep action")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need = (pre or 0) + duration_s(cfg["server"]["drain_delay"]) \
        + duration_s(cfg["server"]["shutdown_grace"])
    probs.check(grace >= need, f"terminationGracePeriodSeconds {grace} < {need}")

    mounts = {m["name"]: m for m in hg.get("volumeMounts", [])}
    vols = by_name(spec.get("volumes"))
    for m in mounts.values():
        probs.check("subPath" not in m and "subPathExpr" not in m,
                    f"mount {m['name']} uses subPath: no hot reload")
        probs.check(m.get("readOnly") is True, f"mount {m['name']} not readOnly")
    want_mounts = {
        "hookgate-config": ("/etc/hookgate", "configMap", "name", cm_name),
        "coolpopup-webhook-secret": ("/etc/hookgate/secrets", "secret", "secretName",
                                     "coolpopup-webhook-secret"),
        "hookgate-tls": ("/etc/hookgate/tls", "secret", "secretName", "hookgate-tls"),
    }
    for vol, (path, src, key, ref) in want_mounts.items():
        probs.check(dig(mounts, vol, "mountPath") == path, f"{vol} not mounted at {path}")
        probs.check(dig(vols, vol, src, key) == ref, f"volume {vol} is not {src} {ref}")
    env = {e["name"]: e.get("value") for e in hg.get("env", [])}
    probs.check(env.get("HOOKGATE_CONFIG", "/etc/hookgate/config.toml")
                == "/etc/hookgate/config.toml", "HOOKGATE_CONFIG is not the mounted file")

    # Every file the config names lives in a mounted volume, at the right key.
    files = [cfg["server"]["tls"]["cert_file"], cfg["server"]["tls"]["key_file"]]
    for r in cfg.get("routes", []):
        files += r.get("secret_files", [])
    probs.check(any(f.startswith("/etc/hookgate/secrets/") for f in files),
                "no route secret under /etc/hookgate/secrets")
    for f in files:
        probs.check(f.startswith(("/etc/hookgate/tls/", "/etc/hookgate/secrets/")),
                    f"{f} is outside the mounted secret volumes")
    probs.check(cfg["server"]["tls"]["cert_file"] == "/etc/hookgate/tls/tls.crt"
                and cfg["server"]["tls"]["key_file"] == "/etc/hookgate/tls/tls.key",
                "TLS files must be the cert-manager keys tls.crt/tls.key")

    # The app: no published ports.
    for c in spec.get("containers", []):
        probs.check(not c.get("ports"), f"container {c['name']} publishes ports")

    # Service: 443 -> https only.
    svc = (kinds.get("Service") or [{}])[0]
    sports = dig(svc, "spec", "ports", default=[])
    probs.check(len(sports) == 1 and sports[0].get("port") == 443
                and sports[0].get("targetPort") in ("https", https_port),
                f"Service must expose only 443 -> https, has {sports}")
    sel = dig(svc, "spec", "selector")
    probs.check(sel == dig(dep, "spec", "selector", "matchLabels"),
                "Service selector differs from the Deployment's")

    # NetworkPolicy: 8443 from anywhere, 9901 from monitoring only.
    np = (kinds.get("NetworkPolicy") or [{}])[0]
    rules = dig(np, "spec", "ingress", default=[])
    admitted = {}
    for r in rules:
        for p in r.get("ports", []):
            admitted.setdefault(p.get("port"), []).append(r.get("from"))
    probs.check(set(admitted) == {https_port, admin_port},
                f"NetworkPolicy admits ports {sorted(admitted)}, want {https_port} and "
                f"{admin_port} only")
    probs.check(admitted.get(https_port) == [None], "https port must be open to all sources")
    mon = [{"namespaceSelector": {"matchLabels":
                                  {"kubernetes.io/metadata.name": "monitoring"}}}]
    probs.check(admitted.get(admin_port) == [mon],
                "admin port must be admitted from the monitoring namespace only")
    probs.check(dig(np, "spec", "podSelector", "matchLabels")
                == dig(dep, "spec", "selector", "matchLabels"),
                "NetworkPolicy selects other pods than the Deployment's")

    pdb = (kinds.get("PodDisruptionBudget") or [{}])[0]
    probs.check(dig(dep, "spec", "replicas", default=1) >= 2
                and dig(pdb, "spec", "minAvailable") == 1,
                "want replicas >= 2 with a PodDisruptionBudget minAvailable 1")

    pm = (kinds.get("PodMonitor") or [{}])[0]
    ep = dig(pm, "spec", "podMetricsEndpoints", 0, default={})
    probs.check(ep.get("port") == "admin" and ep.get("path") == "/metrics",
                "PodMonitor must scrape port admin, path /metrics")

    cert = (kinds.get("Certificate") or [{}])[0]
    probs.check(dig(cert, "spec", "secretName") == "hookgate-tls", "Certificate secretName")
    probs.check(dig(cert, "spec", "privateKey", "algorithm") == "ECDSA"
                and dig(cert, "spec", "privateKey", "size") == 256,
                "Certificate key must be ECDSA P-256")
    issuers = [dig(d, "metadata", "name") for d in kinds.get("Issuer", [])]
    probs.check(dig(cert, "spec", "issuerRef", "name") in issuers,
                "Certificate issuerRef names no shipped Issuer")

    # No secret material anywhere in the rendered output.
    probs.check("Secret" not in kinds, "rendered output contains a Secret")
    return probs.finish("deployment contract holds")


# ------------------------------------------------------------- dockerfile --

def cmd_dockerfile(path: str) -> int:
    probs = Problems()
    lines, buf = [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(buf.strip())
            buf = ""
    instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "")
             for l in lines]
    froms = [a for i, a in instr if i == "FROM"]
    probs.check(len(froms) == 2, f"want 2 stages, got {len(froms)}")
    probs.check(bool(froms) and froms[0].startswith("rust:"), "builder must be the rust image")
    probs.check(len(froms) > 1 and (froms[-1].startswith("gcr.io/distroless/cc-debian12:nonroot")
                                    or froms[-1].startswith("gcr.io/distroless/static")
                                    or froms[-1] == "scratch"),
                "runtime must be distroless or scratch")
    last = max(n for n, (i, _) in enumerate(instr) if i == "FROM") if froms else 0
    runtime = instr[last:]
    runs = " ".join(a for i, a in instr if i == "RUN")
    probs.check("cargo build --release --locked" in runs, "cargo build --release --locked")
    probs.check(any(i == "COPY" and a.endswith("/usr/local/bin/hookgate") for i, a in runtime),
                "binary not copied to /usr/local/bin/hookgate")
    probs.check(("USER", "65532:65532") in runtime, "USER 65532:65532 missing")
    probs.check(not any(i == "RUN" for i, _ in runtime), "RUN in the runtime stage (no shell)")
    probs.check(any(i == "ENV" and re.fullmatch(r"HOOKGATE_CONFIG[= ]/etc/hookgate/config.toml", a)
                    for i, a in runtime), "ENV HOOKGATE_CONFIG=/etc/hookgate/config.toml")
    expose = " ".join(a for i, a in runtime if i == "EXPOSE").split()
    probs.check(sorted(expose) == ["8443", "9901"], f"EXPOSE {expose}, want 8443 9901")
    ep = [a for i, a in runtime if i == "ENTRYPOINT"]
    probs.check(bool(ep) and ep[-1].startswith("[")
                and yaml.safe_load(ep[-1]) in (["hookgate", "serve"],
                                                ["/usr/local/bin/hookgate", "serve"]),
                f"ENTRYPOINT must be exec form hookgate serve, got {ep}")
    return probs.finish("image contract holds")


def cmd_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "validate" and len(args) >= 2:
        return cmd_validate(args[0], args[1:])
    if cmd == "render" and len(args) == 1:
        return cmd_render(args[0])
    if cmd == "overlay" and len(args) == 2:
        return cmd_overlay(*args)
    if cmd == "patched" and len(args) == 1:
        return cmd_patched(args[0])
    if cmd == "drift" and len(args) == 1:
        return cmd_drift(args[0])
    if cmd == "policy" and len(args) == 2:
        return cmd_policy(*args)
    if cmd == "dockerfile" and len(args) == 1:
        return cmd_dockerfile(args[0])
    if cmd == "free-port" and not args:
        return cmd_free_port()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
