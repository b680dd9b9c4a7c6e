#!/usr/bin/env python3
"""Checks k8s/ and the Dockerfile offline, as CI does.

Every overlay is rendered with `kubectl kustomize`; the core kinds are validated with
`kubernetes-validate --strict` against Kubernetes 1.31's schemas, KEDA's objects against
the schema of KEDA 2.16's ScaledObject kept in k8s/schemas/, and everything goes through
`checkov`'s Kubernetes policies. The Dockerfile is read for its stages, its user and the
three binaries it ships, and checked by checkov's Dockerfile policies.

Exit status 0 when everything holds; otherwise each failure is printed. Tools are found
on PATH or beside this interpreter (a virtualenv's bin/).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

# `check.py --root DIR` checks a copy of the tree (the tests break one on purpose).
ROOT = pathlib.Path(
    sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv else pathlib.Path(__file__).resolve().parent.parent
)
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.31.0"
OVERLAYS = ["dev", "prod"]
SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda-2.16-scaledobject.json"}
BINARIES = ["xt", "xt-coordinator", "xt-worker"]


def tool(name):
    here = pathlib.Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} not found (pip install kubernetes-validate checkov; kubectl on PATH)")
    return found


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def check_overlay(overlay, out_dir, failures):
    rendered = run([tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)])
    if rendered.returncode != 0:
        failures.append(f"{overlay}: kubectl kustomize failed:\n{rendered.stderr}")
        return None
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    core, custom = [], []
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        (custom if key in SCHEMAS else core).append(d)
        if "/" in (d.get("apiVersion") or "") and key not in SCHEMAS and not any(
            d["apiVersion"].startswith(g)
            for g in ("apps/", "policy/", "networking.k8s.io/", "autoscaling/", "rbac.")
        ):
            failures.append(f"{overlay}: {key} has no schema to check it against")
    core_file = out_dir / f"{overlay}-core.yaml"
    core_file.write_text(yaml.safe_dump_all(core, sort_keys=False))
    v = run([tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(core_file)])
    if v.returncode != 0 or "ERROR" in v.stdout:
        errors = "\n".join(line for line in v.stdout.splitlines() if not line.startswith("INFO"))
        failures.append(f"{overlay}: kubernetes-validate:\n{errors}{v.stderr}")
    for d in custom:
        schema = json.loads(SCHEMAS[(d["apiVersion"], d["kind"])].read_text())
        for e in jsonschema.Draft202012Validator(schema).iter_errors(d):
            path = "/".join(str(p) for p in e.absolute_path)
            failures.append(f"{overlay}: {d['kind']} {d['metadata']['name']}: {path}: {e.message}")
    everything = out_dir / f"{overlay}.yaml"
    everything.write_text(rendered.stdout)
    return everything, docs


def check_semantics(overlay, docs, failures):
    """What no schema says: the probes and the grace period the cluster's design needs."""
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    coord = by.get(("Deployment", "xt-coordinator"))
    worker = by.get(("Deployment", "xt-worker"))
    if not coord or not worker:
        failures.append(f"{overlay}: no coordinator or worker Deployment")
        return
    c = coord["spec"]["template"]["spec"]["containers"][0]
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        failures.append(f"{overlay}: the coordinator must be ready only while leading (/readyz)")
    w = worker["spec"]["template"]["spec"]
    env = {}
    cm = by.get(("ConfigMap", "xt-config"), {}).get("data", {})
    env.update(cm)
    drain = int(env.get("XT_DRAIN_SECS", "25"))
    if w.get("terminationGracePeriodSeconds", 30) <= drain:
        failures.append(f"{overlay}: the workers' grace period must outlast XT_DRAIN_SECS ({drain})")
    for d in docs:
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec is None:
            continue
        for c in spec.get("containers", []):
            sc = c.get("securityContext", {})
            if not (spec.get("securityContext", {}).get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")):
                failures.append(f"{overlay}: {d['metadata']['name']}/{c['name']} must run as non-root on a read-only root")
    services = [d for d in docs if d["kind"] == "Service"]
    exposed = [s["metadata"]["name"] for s in services if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    if any(n != "xt-api" for n in exposed):
        failures.append(f"{overlay}: only the API may be exposed outside, not {exposed}")


def check_dockerfile(failures):
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) < 2:
        failures.append("Dockerfile: a build stage and a runtime stage expected")
        return
    runtime = text[text.rfind("\nFROM"):]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        failures.append("Dockerfile: the runtime stage must switch to a non-root USER")
    copied = " ".join(re.findall(r"^COPY\s+--from=\S+\s+(.*)$", runtime, re.M))
    for b in BINARIES:
        if not re.search(rf"/{re.escape(b)}(\s|$)", copied):
            failures.append(f"Dockerfile: the runtime stage does not ship {b}")
    build = text[: text.rfind("\nFROM")]
    for b in BINARIES:
        if b not in build:
            failures.append(f"Dockerfile: the build stage does not build {b}")
    if "cargo" in runtime:
        failures.append("Dockerfile: the runtime stage must not hold the toolchain")


def checkov(target, framework, failures):
    r = run([tool("checkov"), "--quiet", "--compact", "--skip-download", "--framework", framework,
             "--config-file", str(K8S / ".checkov.yaml"), "-f", str(target)])
    if r.returncode != 0:
        failures.append(f"checkov ({framework}) on {target.name}:\n{r.stdout}{r.stderr}")


def main():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = pathlib.Path(tmp)
        for overlay in OVERLAYS:
            got = check_overlay(overlay, out_dir, failures)
            if got:
                everything, docs = got
                check_semantics(overlay, docs, failures)
                checkov(everything, "kubernetes", failures)
        check_dockerfile(failures)
        checkov(ROOT / "Dockerfile", "dockerfile", failures)
    for f in failures:
        print(f"FAIL {f}\n")
    if failures:
        sys.exit(1)
    print(f"ok: overlays {', '.join(OVERLAYS)} and the Dockerfile")


if __name__ == "__main__":
    main()
