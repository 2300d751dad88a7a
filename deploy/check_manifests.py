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
                               binary can be had: resources (files and bases),
                               configMapGenerator (without the hash suffix;
                               behavior create/replace), images, labels,
                               strategic-merge patches (with a target, `null`
                               deletes a key, `$patch: delete` an object) and
                               JSON 6902 patches (add/remove/replace).
  overlay   BASE_DIR OUT_DIR   write a throwaway overlay that applies
                               sidecar-patch.yaml to a sample Deployment.
  patched   RENDERED           check that overlay's output: app untouched,
                               hookgate sidecar and volumes added.
  drift     BASE_DIR           the hookgate container and volumes in
                               sidecar-patch.yaml equal those in deployment.yaml.
  policy    RENDERED CONFIG [BASE_CONFIG]
                               the rendered base or overlay against the
                               deployment contract (ports, probes, mounts,
                               security, grace period; with a [store]: the
                               store's volume or Secret, replicas, PDB). With
                               BASE_CONFIG (an overlay's): CONFIG must equal it
                               but for [store] and the queued delivery keys.
  example-secret FILE...       Secret manifests shipped as examples hold
                               placeholders only.
  dockerfile FILE              the image contract (stages, user, entrypoint...).
  free-port                    print a free TCP port on 127.0.0.1.
"""

from __future__ import annotations

import copy
import os
import posixpath
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
    "PrometheusRule": ("monitoring.coreos.com/v1", ["groups"]),
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
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total, rest = 0.0, text.strip()
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", rest):
        total += float(num) * units[unit]
    if not re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*(ms|s|m|h|d))+\s*", rest):
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
    recursively (a `null` value deletes the key), lists of named maps merge
    by `name`, other lists replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
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


def json6902(doc: dict, ops: list) -> dict:
    """RFC 6902 add/remove/replace, which is all our overlays use."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op["op"], op["path"]
        keys = [k.replace("~1", "/").replace("~0", "~") for k in path.split("/")[1:]]
        parent = doc
        for k in keys[:-1]:
            parent = parent[int(k)] if isinstance(parent, list) else parent[k]
        last = keys[-1]
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[int(last)]
            elif kind == "replace":
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                raise SystemExit(f"fallback renderer: unsupported JSON patch op {kind!r}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in parent:
                    raise SystemExit(f"fallback renderer: replace of missing {path}")
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise SystemExit(f"fallback renderer: unsupported JSON patch op {kind!r}")
    return doc


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


def render_docs(base: str) -> list[dict]:
    kust = yaml.safe_load(open(os.path.join(base, "kustomization.yaml"), encoding="utf-8"))
    supported = {"apiVersion", "kind", "resources", "configMapGenerator",
                 "patches", "images", "labels"}
    extra = set(kust) - supported
    if extra:
        raise SystemExit(f"fallback renderer: unsupported kustomization fields {sorted(extra)}")
    docs: list[dict] = []
    for res in kust.get("resources", []):
        path = os.path.join(base, res)
        docs.extend(render_docs(path) if os.path.isdir(path) else load_docs(path))
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.partition("=") if "=" in f else (os.path.basename(f), "", f)
            data[key] = open(os.path.join(base, src or f), encoding="utf-8").read()
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": gen["name"]}, "data": data}
        behavior = gen.get("behavior", "create")
        old = [n for n, d in enumerate(docs) if d.get("kind") == "ConfigMap"
               and dig(d, "metadata", "name") == gen["name"]]
        if behavior == "create":
            if old:
                raise SystemExit(f"fallback renderer: ConfigMap {gen['name']} exists")
            docs.append(cm)
        elif behavior == "replace" and len(old) == 1:
            cm["metadata"] = docs[old[0]]["metadata"]
            docs[old[0]] = cm
        else:
            raise SystemExit(f"fallback renderer: configMapGenerator behavior {behavior!r}")
    for p in kust.get("patches", []):
        if "path" in p:
            patch = yaml.safe_load(open(os.path.join(base, p["path"]), encoding="utf-8"))
        else:
            patch = yaml.safe_load(p["patch"])
        if p.get("options"):
            raise SystemExit("fallback renderer: patch options are not supported")
        target = p.get("target")
        out = []
        for doc in docs:
            if isinstance(patch, list):   # JSON 6902: needs a target
                out.append(json6902(doc, patch) if target and matches(doc, target) else doc)
                continue
            if target is not None:
                hit = matches(doc, target)
            else:
                hit = (doc.get("kind") == patch.get("kind")
                       and dig(doc, "metadata", "name") == dig(patch, "metadata", "name"))
            if hit and patch.get("$patch") == "delete":
                continue
            if hit:
                doc = strategic_merge(doc, {k: v for k, v in patch.items()
                                            if k != "metadata"})
            out.append(doc)
        docs = out
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
    return docs


def cmd_render(base: str) -> int:
    sys.stdout.write(yaml.safe_dump_all(render_docs(base), sort_keys=False))
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

# Keys of the second part of SPEC.md that an overlay adds to the base config.
STORE_KEYS = {"engine", "path", "url_file", "tls", "timeout"}
QUEUED_ROUTE_KEYS = {"delivery", "delivery_concurrency", "retry_schedule", "max_delivery_age",
                     "retention_delivered", "retention_dead"}


def check_store_config(cfg: dict, probs: Problems) -> None:
    """[store] and the routes' delivery keys, as SPEC.md defines them; the
    binary checks every key when it knows them (check.sh runs it then)."""
    store = cfg.get("store")
    routes = cfg.get("routes", [])

    def dur(where: str, value) -> float | None:
        try:
            return duration_s(value)
        except (ValueError, AttributeError):
            probs.add(f"{where}: {value!r} is not a duration")
            return None

    if store is not None:
        probs.check(set(store) <= STORE_KEYS, f"[store] unknown keys {sorted(set(store) - STORE_KEYS)}")
        engine = store.get("engine", "sqlite")
        probs.check(engine in ("sqlite", "postgres"), f"store.engine {engine!r}")
        if engine == "sqlite":
            probs.check(str(store.get("path", "")).startswith("/"), "store.path must be absolute")
            probs.check("url_file" not in store and "tls" not in store,
                        "store.url_file/tls are postgres keys")
        else:
            probs.check(str(store.get("url_file", "")).startswith("/"),
                        "store.url_file must be an absolute path")
            probs.check("path" not in store, "store.path is a sqlite key")
            probs.check(store.get("tls", "require") in ("require", "verify-full"),
                        f"store.tls {store.get('tls')!r}: want require or verify-full (events "
                        "hold personal data; never disable across a network)")
        if "timeout" in store:
            dur("store.timeout", store["timeout"])
    for r in routes:
        where = f"routes[{r.get('name')}]"
        delivery = r.get("delivery", "direct")
        probs.check(delivery in ("direct", "queued"), f"{where}.delivery {delivery!r}")
        if delivery == "queued":
            probs.check(store is not None, f"{where}: delivery = \"queued\" needs a [store]")
        sched = r.get("retry_schedule")
        if sched is not None:
            probs.check(isinstance(sched, list) and len(sched) > 0,
                        f"{where}.retry_schedule must be a non-empty list")
            for n, step in enumerate(sched or []):
                dur(f"{where}.retry_schedule[{n}]", step)
        for key in ("max_delivery_age", "retention_delivered", "retention_dead"):
            if key in r:
                dur(f"{where}.{key}", r[key])
        if "delivery_concurrency" in r:
            probs.check(isinstance(r["delivery_concurrency"], int) and r["delivery_concurrency"] >= 1,
                        f"{where}.delivery_concurrency must be an integer >= 1")


def without_store(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg.pop("store", None)
    for r in cfg.get("routes", []):
        for key in QUEUED_ROUTE_KEYS:
            r.pop(key, None)
    return cfg


def cmd_policy(rendered: str, config_path: str, base_config: str | None = None) -> int:
    probs = Problems()
    cfg = tomllib.load(open(config_path, "rb"))
    docs = load_docs(rendered)
    check_store_config(cfg, probs)
    store = cfg.get("store")
    engine = store.get("engine", "sqlite") if store else None
    if base_config is not None:
        base = tomllib.load(open(base_config, "rb"))
        probs.check(without_store(cfg) == without_store(base),
                    f"{config_path} differs from {base_config} beyond [store] and the "
                    f"routes' {', '.join(sorted(QUEUED_ROUTE_KEYS))}")
        probs.check(store is not None, f"{config_path}: an overlay config without [store]")
        probs.check(any(r.get("delivery") == "queued" for r in cfg.get("routes", [])),
                    f"{config_path}: no route with delivery = \"queued\"")
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

    workloads = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    probs.check(len(workloads) == 1,
                f"want one Deployment or StatefulSet, got {len(workloads)}")
    dep = (workloads or [{}])[0]
    spec = dig(dep, "spec", "template", "spec", default={})
    replicas = dig(dep, "spec", "replicas", default=1)
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
    claims = {dig(c, "metadata", "name"): c for c in dig(dep, "spec", "volumeClaimTemplates",
                                                         default=[])}
    writable: set[str] = set()
    secret_dirs = ["/etc/hookgate/tls/", "/etc/hookgate/secrets/"]

    def mount_of(path: str):
        """The hookgate mount that holds `path` (the deepest one)."""
        hits = [m for m in mounts.values()
                if path.startswith(m.get("mountPath", "").rstrip("/") + "/")]
        return max(hits, key=lambda m: len(m["mountPath"]), default=None)

    if engine == "sqlite":
        path = store["path"]
        m = mount_of(path)
        probs.check(m is not None and m["mountPath"] == posixpath.dirname(path),
                    f"store.path {path}: its directory must be a volume mounted on hookgate")
        probs.check(m is None or not m["mountPath"].startswith("/etc/hookgate"),
                    "the store must not live in the read-only config volume")
        probs.check(m is None or m.get("readOnly") is not True,
                    f"the store's mount {m and m['name']} is readOnly")
        if m is not None:
            writable.add(m["name"])
            claim = claims.get(m["name"])
            probs.check(claim is not None,
                        f"volume {m['name']} is not a volumeClaimTemplate (emptyDir loses the "
                        "queue with the pod: deploy/README.md)")
            probs.check(dig(claim, "spec", "accessModes") == ["ReadWriteOnce"],
                        "the store's claim must be ReadWriteOnce (one pod, one writer)")
            probs.check(dig(claim, "spec", "resources", "requests", "storage") is not None,
                        "the store's claim has no storage request")
        probs.check(dep.get("kind") == "StatefulSet",
                    "a sqlite store wants a StatefulSet: one pod per ReadWriteOnce volume, the "
                    "old pod stopped before the new one starts")
        probs.check(replicas == 1, f"sqlite is single-node: replicas {replicas}, want 1")
        probs.check(dig(spec, "securityContext", "fsGroup") == 65532,
                    "pod securityContext.fsGroup must be 65532 so hookgate can write the volume")
    elif engine == "postgres":
        url = store["url_file"]
        m = mount_of(url)
        probs.check(m is not None and m["mountPath"] == posixpath.dirname(url),
                    f"store.url_file {url}: its directory must be a mounted Secret volume")
        if m is not None:
            probs.check(dig(vols, m["name"], "secret", "secretName") is not None,
                        f"volume {m['name']} (store URL) is not a Secret")
            secret_dirs.append(m["mountPath"].rstrip("/") + "/")
        probs.check(dep.get("kind") == "Deployment", "a postgres store: a Deployment")
        probs.check(not claims and not any("persistentVolumeClaim" in v or "emptyDir" in v
                                           for v in vols.values()),
                    "a postgres store: no volume of hookgate's own")
    if engine != "sqlite":
        probs.check(replicas >= 2, f"replicas {replicas}: want at least 2")
    if dep.get("kind") == "Deployment":
        probs.check(dig(dep, "spec", "strategy", "rollingUpdate", "maxUnavailable") == 0,
                    "Deployment rollingUpdate.maxUnavailable must be 0")
    else:
        probs.check(dig(dep, "spec", "updateStrategy", "type", default="RollingUpdate")
                    == "RollingUpdate", "StatefulSet updateStrategy must be RollingUpdate")

    for m in mounts.values():
        probs.check("subPath" not in m and "subPathExpr" not in m,
                    f"mount {m['name']} uses subPath: no hot reload")
        if m["name"] not in writable:
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
    if engine == "postgres":
        files.append(store["url_file"])
    probs.check(any(f.startswith("/etc/hookgate/secrets/") for f in files),
                "no route secret under /etc/hookgate/secrets")
    for f in files:
        probs.check(f.startswith(tuple(secret_dirs)),
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

    rules = kinds.get("PrometheusRule", [])
    probs.check(len(rules) == 1 and dig(rules, 0, "spec", "groups"),
                "want the PrometheusRule with hookgate's alerts")

    pdbs = kinds.get("PodDisruptionBudget", [])
    if replicas == 1:
        # minAvailable 1 (or maxUnavailable 0) of one pod blocks every drain.
        probs.check(not pdbs, "one replica: a PodDisruptionBudget can only block node drains")
    else:
        pdb = (pdbs or [{}])[0]
        low = dig(pdb, "spec", "minAvailable")
        high = dig(pdb, "spec", "maxUnavailable")
        ok = ((isinstance(low, int) and high is None and 1 <= low <= replicas - 1)
              or (isinstance(high, int) and low is None and 1 <= high <= replicas - 1))
        probs.check(len(pdbs) == 1 and ok,
                    f"want a PodDisruptionBudget that keeps >= 1 of {replicas} replicas up and "
                    f"lets >= 1 be evicted (minAvailable {low}, maxUnavailable {high})")
        probs.check(dig(pdb, "spec", "selector", "matchLabels")
                    == dig(dep, "spec", "selector", "matchLabels"),
                    "PodDisruptionBudget selects other pods than the workload's")

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
    what = {None: "no store", "sqlite": "sqlite store", "postgres": "postgres store"}[engine]
    return probs.finish(f"deployment contract holds ({dep.get('kind')} of {replicas}, {what})")


def cmd_example_secret(files: list[str]) -> int:
    """A Secret shipped as an example carries placeholders, never a value."""
    probs = Problems()
    count = 0
    for path in files:
        for doc in load_docs(path):
            if doc.get("kind") != "Secret":
                continue
            count += 1
            name = dig(doc, "metadata", "name")
            probs.check(not doc.get("data"), f"{path}: Secret {name} has base64 `data`")
            for key, value in (doc.get("stringData") or {}).items():
                probs.check("PLACEHOLDER" in str(value),
                            f"{path}: Secret {name} key {key} holds no PLACEHOLDER marker")
    probs.check(count > 0, "no Secret in the example files")
    return probs.finish(f"{count} example Secret(s) hold placeholders only")


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
    for problem in build_context_problems(path, instr[:last]):
        probs.check(False, problem)
    return probs.finish("image contract holds")


def build_context_problems(dockerfile: str, build_stage: list[tuple[str, str]]) -> list[str]:
    """What the build stage's COPYs leave out that cargo needs: every target
    Cargo.toml names ([[bench]], [[example]], [[test]], [[bin]]) must be in a
    copied path, or the manifest does not parse and `cargo build` fails
    before compiling anything."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(dockerfile)))
    copied = []
    for instr, args in build_stage:
        if instr != "COPY":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in args.split()):
            continue
        copied += [posixpath.normpath(w) for w in words[:-1]]
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        manifest = tomllib.load(f)
    problems = []
    for kind, folder in (("bench", "benches"), ("example", "examples"),
                         ("test", "tests"), ("bin", "src/bin")):
        for target in manifest.get(kind, []):
            name = target.get("name", "?")
            path = target.get("path")
            if path is None:
                path = f"{folder}/{name}.rs"
                if not os.path.exists(os.path.join(root, path)):
                    path = f"{folder}/{name}/main.rs"
            path = posixpath.normpath(path)
            if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in copied):
                problems.append(f"Cargo.toml's [[{kind}]] {name} ({path}) is not copied into the "
                                "build stage: cargo cannot parse the manifest without it")
    return problems


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
    if cmd == "policy" and len(args) in (2, 3):
        return cmd_policy(*args)
    if cmd == "example-secret" and args:
        return cmd_example_secret(args)
    if cmd == "dockerfile" and len(args) == 1:
        return cmd_dockerfile(args[0])
    if cmd == "free-port" and not args:
        return cmd_free_port()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
