#!/usr/bin/env python3
"""Checks of what deploy/ and the Dockerfile ship, without a cluster or a
container engine. Run by .ci/deploy (which installs the pinned packages
into .ci/.venv); each problem is printed and the exit status is 1 if any.

1. Every Kubernetes object under deploy/kubernetes validates against the
   Kubernetes schemas of each version in K8S_VERSIONS (kubernetes-validate,
   strict: unknown fields are errors), and every custom resource against
   the CRD committed in .ci/schemas (strict too: the API server would prune
   an unknown field without a word). A kind with neither is an error.
2. Each layout (a directory with a kustomization.yaml that lists only
   resources) is complete and consistent: its files are all listed; names
   are unique; Services, the PodMonitor and probes name ports that exist;
   ConfigMaps exist; the KEDA trigger names the scaler Service; every Secret
   referenced is one deploy/README.md tells how to create; the grace period
   exceeds weir's stop timeout; the pods meet the restricted Pod Security
   Standard, have requests and a memory limit; an endpoint bound beyond
   loopback has a token.
3. Each weir container's command line is one the weir binary accepts
   (`weir SUB --help` lists every flag it passes); a subcommand the binary
   does not have yet is reported as skipped only where LANDING says it is
   being added. Each pipeline in a ConfigMap passes `weir validate` with the
   container's environment (paths of the image mapped to the repository).
   The scaler's container runs here from its args (0.0.0.0 moved to
   loopback): its gRPC port must accept connections, and SIGTERM must end
   it with exit 0 within the pod's grace period.
4. The edge pod runs here as the kubelet would run it: both containers
   from their args and env (0.0.0.0 ports moved to free loopback ports,
   volumes to temporary directories), probes until ready, fraud-v1 events
   posted through the ingest Service's port with the token, alerts
   committed, then SIGTERM: both must exit 0 within the grace period. Then
   the pod again on the same volume: the pipeline must resume from the
   checkpoint and write no alert twice.
5. The Dockerfile: what it COPYs exists and is in the build context, the
   features it builds exist in crates/weir/Cargo.toml, its Rust image is
   not older than the workspace's rust-version, its user is the manifests'
   runAsUser, the model directory the manifests name is what it copies.
6. deploy/prometheus/prometheus.yml loads, and so does its commented-out
   Kubernetes job once uncommented.

    python .ci/deploy_check.py --weir target/debug/weir
"""

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT / ".ci" / "schemas"

# The Kubernetes versions the manifests are validated for: the oldest they
# claim to support and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

# Subcommands that the manifests use ahead of their arrival in weir (none
# now: `weir scaler` has landed and is run below).
LANDING = {}

# Where the image puts what (see the Dockerfile), mapped to the repository
# or to a scratch directory for the checks that run weir here.
IMAGE_PATHS = {
    "/usr/share/weir/examples/fraud": ROOT / "examples" / "fraud",
}
WEIR_IMAGE_USER = 10001
DEFAULT_STOP_TIMEOUT_S = 25.0
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
PLACEHOLDER_SECRET = "ci-placeholder-secret"

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


passed = 0


def ok(message):
    global passed
    passed += 1
    print(f"ok   {message}")


def rel(path):
    return str(Path(path).relative_to(ROOT))


# ---------------------------------------------------------------- loading


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


INCLUDED = set()


def layouts():
    """Directories with a kustomization.yaml, each with its resources
    resolved recursively: {dir: [(file, document), ...]}. Those that
    another one includes (common/) are parts, checked within the layouts
    that include them."""
    result = {}
    for k in sorted(KUBE.rglob("kustomization.yaml")):
        result[k.parent] = resolve(k.parent, set())
    return result


def resolve(directory, seen):
    kfile = directory / "kustomization.yaml"
    docs = load_documents(kfile)
    where = rel(kfile)
    if len(docs) != 1 or docs[0].get("kind") != "Kustomization":
        problem(where, "expected one Kustomization")
        return []
    k = docs[0]
    extra = set(k) - {"apiVersion", "kind", "resources"}
    if extra:
        # Generators and patches would need kustomize to render, which CI
        # does not have: every object must be written out in full.
        problem(where, f"only `resources` is supported here, found {sorted(extra)}")
    out = []
    listed = set()
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            if not (target / "kustomization.yaml").exists():
                problem(where, f"{entry} is a directory without a kustomization.yaml")
            elif target not in seen:
                seen.add(target)
                INCLUDED.add(target)
                out += resolve(target, seen)
        elif target.is_file():
            listed.add(target)
            out += [(target, d) for d in load_documents(target)]
        else:
            problem(where, f"{entry} does not exist")
    for f in sorted(directory.glob("*.y*ml")):
        if f.name != "kustomization.yaml" and f.resolve() not in listed:
            problem(where, f"{f.name} is in the directory but not in `resources`")
    return out


# ------------------------------------------------------- schema validation


def crd_schemas():
    """{(group/version, kind): strict JSON schema} from .ci/schemas."""
    out = {}
    for f in sorted(SCHEMAS.glob("*.yaml")):
        for crd in load_documents(f):
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schema = strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                out[(f"{group}/{v['name']}", kind)] = (schema, f.name)
    return out


def strict(schema):
    """Unknown fields become errors, as kubeconform's --strict does: an
    object schema with properties and neither additionalProperties nor
    x-kubernetes-preserve-unknown-fields gets additionalProperties: false.
    metadata (`type: object` alone in a CRD) is checked separately."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for key, value in schema.items():
            if key in ("properties", "patternProperties"):
                for sub in value.values():
                    strict(sub)
            elif isinstance(value, (dict, list)):
                strict(value)
    elif isinstance(schema, list):
        for item in schema:
            strict(item)
    return schema


def validate_schemas(all_docs):
    crds = crd_schemas()
    checked = set()
    for path, doc in all_docs:
        key = (path, json.dumps(doc, sort_keys=True))
        if key in checked:
            continue
        checked.add(key)
        name = f"{rel(path)} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "Kustomization":
            continue
        api = (doc.get("apiVersion"), doc.get("kind"))
        if api in crds:
            schema, source = crds[api]
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
            )
            meta = doc.get("metadata", {})
            if not isinstance(meta.get("name"), str):
                errors.append("metadata.name is missing")
            for e in errors:
                at = ".".join(str(p) for p in getattr(e, "path", []))
                problem(name, f"against {source}: {at}: {getattr(e, 'message', e)}")
            if not errors:
                ok(f"{name} validates against the CRD in .ci/schemas/{source}")
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                at = ".".join(str(p) for p in e.path)
                problem(name, f"Kubernetes {version}: {at}: {e.message}")
            except kv.SchemaNotFoundError:
                problem(name, f"no schema for {api[0]} {api[1]} in Kubernetes {version} or .ci/schemas")
        ok(f"{name} validates against Kubernetes {', '.join(K8S_VERSIONS)} (strict)")


# ----------------------------------------------------------- consistency


def pod_spec(doc):
    if doc.get("kind") in WORKLOAD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def pod_labels(doc):
    return doc["spec"]["template"]["metadata"].get("labels", {})


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def parse_duration(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a duration: {text}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def container_args(c):
    return list(c.get("command", [])[1:] if c.get("command") else []) + list(c.get("args", []))


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def is_loopback(address):
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def readme_secrets():
    text = (ROOT / "deploy" / "README.md").read_text()
    return set(re.findall(r"kubectl -n weir create secret generic ([a-z0-9-]+)", text))


def check_layout(directory, docs):
    name = rel(directory)
    objects = [d for _, d in docs if d.get("kind") != "Kustomization"]
    seen = {}
    for d in objects:
        key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        if key in seen and seen[key] != d:
            problem(name, f"two different {key[0]} {key[2]}")
        seen[key] = d
    objects = list({json.dumps(d, sort_keys=True): d for d in objects}.values())

    namespaces = {d["metadata"]["name"] for d in objects if d["kind"] == "Namespace"}
    for d in objects:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") not in namespaces:
            problem(name, f"{d['kind']} {d['metadata']['name']} is not in a namespace of the layout")

    workloads = [d for d in objects if pod_spec(d)]
    configmaps = {d["metadata"]["name"]: d for d in objects if d["kind"] == "ConfigMap"}
    services = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Service"}
    documented = readme_secrets()
    secrets = set()

    def pods_matching(selector):
        return [w for w in workloads if matches(selector, pod_labels(w))]

    def port_names(ws):
        return {
            p["name"]: p["containerPort"]
            for w in ws
            for c in pod_spec(w)["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }

    for w in workloads:
        wname = f"{name} {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        if not matches(w["spec"]["selector"]["matchLabels"], pod_labels(w)):
            problem(wname, "selector does not match the pod template's labels")
        if w["kind"] == "StatefulSet" and w["spec"].get("serviceName") not in services:
            problem(wname, "serviceName names no Service of the layout")
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            problem(wname, "pod securityContext.runAsNonRoot is not true")
        if psc.get("runAsUser") != WEIR_IMAGE_USER:
            problem(wname, f"runAsUser is not the image's user {WEIR_IMAGE_USER}")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problem(wname, "seccompProfile is not RuntimeDefault")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problem(wname, f"volume {v['name']}: no ConfigMap {v['configMap']['name']}")
            if "secret" in v:
                secrets.add((v["secret"]["secretName"], wname))
        for c in spec["containers"]:
            cname = f"{wname} container {c['name']}"
            args = container_args(c)
            env = env_of(c)
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(cname, "allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(cname, "readOnlyRootFilesystem is not true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problem(cname, "capabilities do not drop ALL")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
                problem(cname, "no cpu and memory requests")
            if not res.get("limits", {}).get("memory"):
                problem(cname, "no memory limit")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    problem(cname, f"mounts {m['name']}, which is no volume of the pod")
            for e in env.values():
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.add((ref["name"], cname))
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["name"] not in configmaps:
                    problem(cname, f"env {e['name']}: no ConfigMap {ref['name']}")
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                target = probe.get("httpGet") or probe.get("tcpSocket") or {}
                port = target.get("port")
                if isinstance(port, str) and port not in ports:
                    problem(cname, f"{kind} names port {port}, which the container does not have")
            sub = args[0] if args else None
            if sub in ("run", "ingest"):
                live = (c.get("livenessProbe") or {}).get("httpGet", {}).get("path")
                ready = (c.get("readinessProbe") or {}).get("httpGet", {}).get("path")
                if live != "/healthz":
                    problem(cname, "livenessProbe is not an httpGet of /healthz")
                if ready not in (None, "/readyz"):
                    problem(cname, "readinessProbe is not an httpGet of /readyz")
                stop = flag_value(args, "--stop-timeout") or env.get("WEIR_STOP_TIMEOUT", {}).get("value")
                stop_s = parse_duration(stop) if stop else DEFAULT_STOP_TIMEOUT_S
                if grace <= stop_s + 5:
                    problem(cname, f"terminationGracePeriodSeconds {grace} is not well above the stop timeout {stop_s:g} s")
            if sub == "run":
                address = flag_value(args, "--metrics-address") or env.get("WEIR_METRICS_ADDRESS", {}).get("value")
                token = "WEIR_ENDPOINT_TOKEN" in env or flag_value(args, "--endpoint-token-file")
                if address and not is_loopback(address) and not token:
                    problem(cname, f"the endpoint listens on {address} without a token")
                if c.get("livenessProbe") and (not address or is_loopback(address)):
                    problem(cname, "probes cannot reach an endpoint on loopback (or none): bind 0.0.0.0 with a token")
            if sub == "ingest":
                listen = flag_value(args, "--listen") or "127.0.0.1:8080"
                token = "WEIR_INGEST_TOKEN" in env or flag_value(args, "--token-file")
                if not is_loopback(listen) and not token:
                    problem(cname, f"ingest listens on {listen} without a token")

    for s in services.values():
        sname = f"{name} Service/{s['metadata']['name']}"
        pods = pods_matching(s["spec"].get("selector", {}))
        if not pods:
            problem(sname, "its selector matches no pod of the layout")
        names = port_names(pods)
        for p in s["spec"]["ports"]:
            t = p.get("targetPort", p["port"])
            if isinstance(t, str) and t not in names:
                problem(sname, f"targetPort {t} is no container port of its pods")

    for d in objects:
        if d["kind"] == "PodMonitor":
            pname = f"{name} PodMonitor/{d['metadata']['name']}"
            pods = pods_matching(d["spec"]["selector"]["matchLabels"])
            names = port_names(pods)
            if not pods:
                problem(pname, "its selector matches no pod of the layout")
            if not any(e.get("port") in names for e in d["spec"]["podMetricsEndpoints"]):
                problem(pname, "none of its ports is a container port of the layout")
            for e in d["spec"]["podMetricsEndpoints"]:
                cred = e.get("authorization", {}).get("credentials")
                if cred:
                    secrets.add((cred["name"], pname))
        if d["kind"] == "ScaledObject":
            oname = f"{name} ScaledObject/{d['metadata']['name']}"
            ref = d["spec"]["scaleTargetRef"]
            kind = ref.get("kind", "Deployment")
            target = [w for w in workloads if w["kind"] == kind and w["metadata"]["name"] == ref["name"]]
            if not target:
                problem(oname, f"scaleTargetRef names no {kind} {ref['name']} of the layout")
            elif "replicas" in target[0]["spec"]:
                problem(oname, f"{kind} {ref['name']} sets replicas, which the HPA owns")
            for t in d["spec"]["triggers"]:
                if t["type"] != "external":
                    continue
                address = t["metadata"].get("scalerAddress", "")
                m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
                if not m:
                    problem(oname, f"scalerAddress {address!r} is not SERVICE.NAMESPACE.svc.cluster.local:PORT (KEDA dials it from its own namespace)")
                    continue
                svc = services.get(m.group(1))
                if not svc or svc["metadata"]["namespace"] != m.group(2):
                    problem(oname, f"scalerAddress names no Service {m.group(1)} in {m.group(2)}")
                elif int(m.group(3)) not in [p["port"] for p in svc["spec"]["ports"]]:
                    problem(oname, f"Service {m.group(1)} has no port {m.group(3)}")

    for secret, user in sorted(secrets):
        if secret not in documented:
            problem(user, f"Secret {secret} is not among those deploy/README.md creates")
    if not problems:
        ok(f"{name}: {len(objects)} objects consistent; Secrets {sorted({s for s, _ in secrets})} documented")
    return objects


# ------------------------------------------------------ weir command lines


def map_image_path(value, scratch):
    for image, local in IMAGE_PATHS.items():
        if value == image or value.startswith(image + "/"):
            return str(local) + value[len(image):]
    for image in ("/var/lib/weir", "/etc/weir", "/tmp"):
        if value == image or value.startswith(image + "/"):
            return str(scratch / image.strip("/")) + value[len(image):]
    return value


def local_env(c, scratch):
    env = {}
    for name, e in env_of(c).items():
        if "value" in e:
            env[name] = map_image_path(e["value"], scratch)
        elif e.get("valueFrom", {}).get("secretKeyRef"):
            env[name] = PLACEHOLDER_SECRET
    return env


def help_flags(weir, sub):
    r = subprocess.run([weir, sub, "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", r.stdout))


def check_commands(weir, layout_objects):
    containers = []
    for name, objects in layout_objects.items():
        configmaps = {d["metadata"]["name"]: d for d in objects if d["kind"] == "ConfigMap"}
        for w in objects:
            spec = pod_spec(w)
            if not spec:
                continue
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in spec["containers"]:
                containers.append((f"{rel(name)} {w['kind']}/{w['metadata']['name']} container {c['name']}", c, volumes, configmaps, spec))
    done = set()
    for cname, c, volumes, configmaps, spec in containers:
        args = container_args(c)
        if not args:
            problem(cname, "no args: the image's default command is `weir --help`")
            continue
        sub = args[0]
        flags = help_flags(weir, sub)
        if flags is None:
            if sub in LANDING:
                print(f"skip {cname}: weir has no `{sub}` subcommand yet ({LANDING[sub]} is being added); its flags are checked once it has")
            else:
                problem(cname, f"`weir {sub}` is not a subcommand of weir")
            continue
        for a in args[1:]:
            if a.startswith("--") and a.split("=", 1)[0] not in flags:
                problem(cname, f"`weir {sub}` has no flag {a.split('=', 1)[0]}")
        ok(f"{cname}: `weir {' '.join(args)}` is accepted by weir {sub} --help")
        if sub == "scaler":
            run_scaler(weir, cname, c, spec)
        if sub != "run":
            continue
        pipeline = next((a for a in args[1:] if not a.startswith("-")), None)
        mount = next((m for m in c.get("volumeMounts", []) if pipeline and pipeline.startswith(m["mountPath"] + "/")), None)
        if not mount or "configMap" not in volumes.get(mount["name"], {}):
            problem(cname, f"the pipeline {pipeline} is not in a mounted ConfigMap")
            continue
        cm = configmaps[volumes[mount["name"]]["configMap"]["name"]]
        key = pipeline[len(mount["mountPath"]) + 1:]
        if key not in cm.get("data", {}):
            problem(cname, f"ConfigMap {cm['metadata']['name']} has no key {key}")
            continue
        if (cm["metadata"]["name"], cname.split(" container")[0]) in done:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            (scratch / "var/lib/weir").mkdir(parents=True)
            file = scratch / "pipeline.toml"
            file.write_text(cm["data"][key])
            env = base_env()
            env.update(local_env(c, scratch))
            r = subprocess.run([weir, "validate", str(file)], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                problem(cname, f"weir validate of ConfigMap {cm['metadata']['name']} failed:\n{r.stdout}{r.stderr}")
            else:
                ok(f"{cname}: ConfigMap {cm['metadata']['name']} passes weir validate")


def run_scaler(weir, cname, c, spec):
    """The scaler container's command line, run here: 0.0.0.0 ports moved
    to free loopback ports, Secrets as placeholders. Its gRPC port must
    accept connections (the manifest's probes are tcpSocket), and SIGTERM
    must end it with exit 0 within the pod's grace period."""
    moved = {}

    def move(text):
        def sub(m):
            moved.setdefault(int(m.group(1)), free_port())
            return f"127.0.0.1:{moved[int(m.group(1))]}"

        return re.sub(r"0\.0\.0\.0:(\d+)", sub, text)

    args = [move(a) for a in container_args(c)]
    env = base_env()
    for name, e in env_of(c).items():
        if "value" in e:
            env[name] = move(e["value"])
        elif e.get("valueFrom", {}).get("secretKeyRef"):
            env[name] = PLACEHOLDER_SECRET
    port = next((p["containerPort"] for p in c.get("ports", []) if p["name"] == "grpc"), None)
    if port not in moved:
        problem(cname, "the scaler does not listen on 0.0.0.0 at its grpc port: KEDA and the probes could not reach it")
        return
    grace = spec.get("terminationGracePeriodSeconds", 30)
    proc = subprocess.Popen([weir] + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", moved[port]), timeout=1).close()
                up = True
                break
            except OSError:
                time.sleep(0.1)
        if not up:
            proc.kill()
            out, err = proc.communicate()
            problem(cname, f"`weir {' '.join(args)}` did not accept connections on its grpc port within 10 s (exit {proc.returncode}):\n{err}")
            return
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            problem(cname, f"the scaler did not exit within the grace period ({grace} s) after SIGTERM")
            return
        if code != 0:
            problem(cname, f"the scaler exited {code} after SIGTERM:\n{proc.stderr.read()}")
            return
        ok(f"{cname}: the scaler serves on its grpc port and stops on SIGTERM with exit 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------ the edge pod


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Loopback only: no proxy from the environment.
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def base_env():
    """This process's environment without weir's own variables: a
    container sees only those its manifest sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WEIR_") and k != "RUST_LOG"}


def http(method, url, token=None, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with NO_PROXY.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def run_edge_pod(weir, objects, events):
    """The edge StatefulSet's pod, run as the kubelet would run it, twice on
    the same volume: the second time it must resume from the first one's
    checkpoint and add no alert twice."""
    sts = next(d for d in objects if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "weir-edge")
    ingest_svc = next(d for d in objects if d["kind"] == "Service" and d["metadata"]["name"] == "weir-ingest")
    configmaps = {d["metadata"]["name"]: d for d in objects if d["kind"] == "ConfigMap"}
    spec = sts["spec"]["template"]["spec"]
    scratch = Path(tempfile.mkdtemp(prefix="weir-edge-pod-"))
    lines = events.splitlines(keepends=True)
    half = len(lines) // 2
    try:
        first = run_pod_once(weir, spec, ingest_svc, configmaps, scratch, b"".join(lines[:half]), "edge pod", 1)
        second = run_pod_once(weir, spec, ingest_svc, configmaps, scratch, b"".join(lines[half:]), "edge pod, restarted", 2)
        if first is not None and second is not None:
            alerts = scratch / "var/lib/weir/out/alerts.jsonl"
            ids = [json.loads(l)["txn_id"] for l in alerts.read_text().splitlines()]
            if len(ids) != len(set(ids)):
                problem("edge pod, restarted", f"{len(ids) - len(set(ids))} alerts written twice")
            elif len(ids) <= first:
                problem("edge pod, restarted", "no alert from the events posted after the restart")
            else:
                ok(f"edge pod, restarted: {len(ids)} alerts ({first} before the restart), none twice")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_pod_once(weir, spec, ingest_svc, configmaps, scratch, events, where, attempt):
    """Starts the pod's containers, waits for the probes, posts `events`,
    waits for alerts, stops it with SIGTERM. Returns the number of alerts
    committed, or None after a problem."""
    grace = spec.get("terminationGracePeriodSeconds", 30)
    procs = []
    failed = len(problems)
    # Volumes: the ConfigMap's files where the container mounts them.
    for v in spec["volumes"]:
        if "configMap" in v:
            for c in spec["containers"]:
                for m in c.get("volumeMounts", []):
                    if m["name"] == v["name"]:
                        target = Path(map_image_path(m["mountPath"], scratch))
                        target.mkdir(parents=True, exist_ok=True)
                        for k, text in configmaps[v["configMap"]["name"]]["data"].items():
                            (target / k).write_text(text)
    (scratch / "var/lib/weir").mkdir(parents=True, exist_ok=True)
    # Ports: each 0.0.0.0:PORT moves to a free loopback port.
    moved = {}

    def move(text):
        def sub(m):
            port = int(m.group(1))
            moved.setdefault(port, free_port())
            return f"127.0.0.1:{moved[port]}"

        return re.sub(r"0\.0\.0\.0:(\d+)", sub, text)

    def local_arg(a):
        if a.startswith("--") and "=" in a:
            flag, value = a.split("=", 1)
            return f"{flag}={move(map_image_path(value, scratch))}"
        return move(map_image_path(a, scratch))

    def url_of(c, port_name, path):
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == port_name)
        return f"http://127.0.0.1:{moved[port]}{path}"

    tokens = {}
    alerts = scratch / "var/lib/weir/out/alerts.jsonl"
    before = len(alerts.read_text().splitlines()) if alerts.exists() else 0
    try:
        for c in spec["containers"]:
            args = [local_arg(a) for a in container_args(c)]
            env = base_env()
            for name, e in env_of(c).items():
                if "value" in e:
                    env[name] = move(map_image_path(e["value"], scratch))
                elif e.get("valueFrom", {}).get("secretKeyRef"):
                    ref = e["valueFrom"]["secretKeyRef"]["name"]
                    tokens.setdefault(ref, f"token-of-{ref}")
                    env[name] = tokens[ref]
            log = open(scratch / f"{c['name']}-{attempt}.log", "w")
            procs.append((c, subprocess.Popen([weir] + args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))

        # Probes until every container is live (and ready where it has a
        # readiness probe).
        deadline = time.time() + 60
        for c, p in procs:
            for kind in ("livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                url = url_of(c, probe["httpGet"]["port"], probe["httpGet"]["path"])
                while http("GET", url)[0] != 200:
                    if p.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"container {c['name']}: {kind} {url} never answered 200")
                    time.sleep(0.2)
                ok(f"{where}: container {c['name']}: {kind} {probe['httpGet']['path']} answers 200")
        # Events through the ingest Service's target port, with its token.
        ingest = next(c for c, _ in procs if c["name"] == "ingest")
        url = url_of(ingest, ingest_svc["spec"]["ports"][0]["targetPort"], "/v1/streams/transactions/events")
        ndjson = {"Content-Type": "application/x-ndjson"}
        status, _ = http("POST", url, body=events[:1000], headers=ndjson)
        if status != 401:
            problem(where, f"ingest answered {status} to a request without its token")
        status, body = http("POST", url, token=tokens["weir-ingest-token"], body=events, headers={**ndjson, "Idempotency-Key": f"ci-{attempt}"})
        if status != 200:
            raise RuntimeError(f"posting events: status {status}: {body[:300]!r}")
        ok(f"{where}: {json.loads(body)['accepted']} events posted through Service weir-ingest's port with the token")
        worker = next(c for c, _ in procs if c["name"] == "worker")
        metrics = url_of(worker, "metrics", "/metrics")
        if http("GET", metrics)[0] != 401 or http("GET", metrics, token=tokens["weir-endpoint-token"])[0] != 200:
            problem(where, "the worker's /metrics does not need its token, or refuses it")
        deadline = time.time() + 60
        while not (alerts.exists() and len(alerts.read_text().splitlines()) > before):
            if time.time() > deadline:
                raise RuntimeError("no new alert committed within 60 s")
            time.sleep(0.2)
        ok(f"{where}: alerts committed to {alerts.relative_to(scratch)}")
        # The kubelet's stop: SIGTERM to every container, SIGKILL after the
        # grace period.
        start = time.time()
        for _, p in procs:
            p.send_signal(signal.SIGTERM)
        for c, p in procs:
            try:
                rc = p.wait(timeout=max(0.1, grace - (time.time() - start)))
            except subprocess.TimeoutExpired:
                problem(where, f"container {c['name']} still running after the grace period of {grace} s")
                continue
            if rc != 0:
                problem(where, f"container {c['name']} exited {rc} on SIGTERM")
            else:
                ok(f"{where}: container {c['name']} stopped on SIGTERM, exit 0 in {time.time() - start:.1f} s (grace {grace} s)")
        summary = (scratch / f"worker-{attempt}.log").read_text()
        resumed = "restored from checkpoint" in summary
        if resumed != (attempt > 1):
            problem(where, "the worker " + ("did not resume from the checkpoint" if attempt > 1 else "resumed from a checkpoint on a new volume"))
        elif resumed:
            ok(f"{where}: the worker resumed from the checkpoint of the first run")
    except (RuntimeError, StopIteration, KeyError) as e:
        problem(where, str(e))
    finally:
        for c, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if len(problems) > failed:
        for c, _ in procs:
            log = scratch / f"{c['name']}-{attempt}.log"
            print(f"--- {c['name']} output:\n{log.read_text()[-3000:] if log.exists() else ''}")
        return None
    return len(alerts.read_text().splitlines())


# ------------------------------------------------------------- Dockerfile


def check_dockerfile(layout_objects):
    where = "Dockerfile"
    text = (ROOT / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]

    def in_context(path):
        included = True
        for pattern in ignore:
            negate = pattern.startswith("!")
            p = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
                included = negate
        return included

    args = {}
    copies = []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if words[0] == "ARG" and "=" in words[1]:
            k, v = line.split(None, 1)[1].split("=", 1)
            args[k] = v.strip('"')
        if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            copies.append(words[1:])
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        dest = words[-1]
        for s in sources:
            if not (ROOT / s).exists():
                problem(where, f"COPY {s}: no such file in the repository")
            elif not in_context(s.rstrip("/")):
                problem(where, f"COPY {s}: excluded from the build context by .dockerignore")
        ok(f"Dockerfile COPY {' '.join(sources)} -> {dest}: present and in the build context")
    cargo = tomllib.loads((ROOT / "crates/weir/Cargo.toml").read_text())
    features = set(cargo["features"])
    wanted = args.get("FEATURES", "").split()
    for f in wanted:
        if f not in features:
            problem(where, f"FEATURES names {f}, not a feature of crates/weir ({sorted(features)})")
    if set(wanted) != set(cargo["features"]["default"]):
        problem(where, f"FEATURES {wanted} differ from weir's default features {cargo['features']['default']}")
    ok(f"Dockerfile FEATURES {wanted} are weir's default features")
    m = re.search(r"rust:(\d+)\.(\d+)", args.get("RUST_IMAGE", ""))
    need = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    if not m or (int(m.group(1)), int(m.group(2))) < tuple(int(x) for x in need.split(".")[:2]):
        problem(where, f"RUST_IMAGE {args.get('RUST_IMAGE')} is older than rust-version {need}")
    else:
        ok(f"Dockerfile RUST_IMAGE {args['RUST_IMAGE']} meets rust-version {need}")
    user = re.search(r"^USER (\d+):(\d+)", text, re.M)
    if not user or int(user.group(1)) != WEIR_IMAGE_USER:
        problem(where, f"USER is not {WEIR_IMAGE_USER} (the manifests' runAsUser)")
    for line in lines:
        if line.startswith("COPY examples/fraud "):
            dest = line.split()[-1]
            if dest not in IMAGE_PATHS:
                problem(where, f"examples/fraud is copied to {dest}, not where the manifests look")
    models = {
        e["value"]
        for objects in layout_objects.values()
        for d in objects
        if pod_spec(d)
        for c in pod_spec(d)["containers"]
        for e in c.get("env", [])
        if e["name"] == "WEIR_MODEL_DIR"
    }
    for m in models:
        local = Path(map_image_path(m, Path("/nonexistent")))
        if not (local / "fraud_lr.onnx").exists():
            problem(where, f"WEIR_MODEL_DIR {m} of the manifests holds no model the image copies")
    ok(f"Dockerfile user {WEIR_IMAGE_USER} and model directory {sorted(models)} match the manifests")


def check_prometheus():
    path = ROOT / "deploy/prometheus/prometheus.yml"
    text = path.read_text()
    config = yaml.safe_load(text)
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    commented = []
    active = False
    for line in text.splitlines():
        if line.startswith("  # - job_name: weir-kubernetes-pods"):
            active = True
        if active:
            if not line.startswith("  #"):
                break
            commented.append(line.replace("  # ", "  ", 1) if line.startswith("  # ") else "")
    try:
        job = yaml.safe_load("\n".join(commented))[0]
        assert job["job_name"] == "weir-kubernetes-pods"
        ok(f"{rel(path)} loads (jobs {jobs}); its commented-out job {job['job_name']} loads once uncommented")
    except Exception as e:
        problem(rel(path), f"the commented-out Kubernetes job does not load once uncommented: {e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weir", required=True, help="the weir binary")
    parser.add_argument("--no-pod", action="store_true", help="skip running the edge pod")
    a = parser.parse_args()

    found = layouts()
    all_docs = [(f, d) for docs in found.values() for f, d in docs]
    for f in sorted(KUBE.rglob("*.y*ml")):
        if f.name != "kustomization.yaml" and not any(p == f for p, _ in all_docs):
            problem(rel(f), "belongs to no layout")
    print("== schemas")
    validate_schemas(all_docs)
    print("== layouts")
    layout_objects = {d: check_layout(d, docs) for d, docs in found.items() if d.resolve() not in INCLUDED}
    print("== weir command lines and pipelines")
    check_commands(a.weir, layout_objects)
    print("== Dockerfile")
    check_dockerfile(layout_objects)
    print("== Prometheus configuration")
    check_prometheus()
    if not a.no_pod:
        print("== the edge pod, run here")
        gen = subprocess.run([a.weir, "generate", "fraud-v1", "--events", "20000"], capture_output=True, check=True)
        run_edge_pod(a.weir, layout_objects[KUBE / "edge"], gen.stdout)
    if problems:
        print(f"\n{len(problems)} problem(s) in deploy/ or the Dockerfile")
        print(f"deploy: {passed} passed, {len(problems)} failed")
        return 1
    print(f"deploy: {passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
