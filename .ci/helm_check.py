#!/usr/bin/env python3
"""The Helm chart through real Helm (v4, the helm-python-sdk wheel's libhelm_c).

For the default values and every charts/autohealer/examples/*.yaml:
  - `helm lint --strict` finds no error or warning;
  - the values pass values.schema.json and the chart renders (`helm template`);
  - it renders exactly the objects of the plain manifests, each namespaced one in the
    release's namespace, wired to each other by the release's name;
  - the ClusterRole and the Role grant exactly what manifests/rbac.yaml's do;
  - with the default values, the DaemonSet's pod is the one of manifests/daemonset.yaml.
Every charts/autohealer/examples/bad/*.yaml (each sets one wrong key) must be refused,
by lint and by rendering, with a message naming that key.
The config.yaml each render holds is checked with `autohealer validate` by
crates/autohealer/tests/helm.rs, which calls `--json` below for the renders.

    python .ci/helm_check.py          # the checks; exit 1 on a failure
    python .ci/helm_check.py --json   # the renders, as JSON, for tests/helm.rs

Needs `pip install helm-python-sdk pyyaml` (.ci/run installs them into a venv).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "autohealer"
KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "DaemonSet"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
# (values file or None for the defaults, release name, namespace)
RENDERS = [(None, "autohealer", "kube-system"), (None, "healer-b", "ops")] + [
    (p, "autohealer", "kube-system") for p in sorted(CHART.glob("examples/*.yaml"))
]


def label(values_file: Path | None, name: str, namespace: str) -> str:
    what = "default values" if values_file is None else str(values_file.relative_to(ROOT))
    return f"{what} (release {name} in {namespace})"


def load_values(values_file: Path | None) -> dict | None:
    if values_file is None:
        return None
    return yaml.safe_load(values_file.read_text()) or {}


def render(chart: helm.Chart, values: dict | None, name: str, namespace: str) -> list[dict]:
    manifests = chart.render(values, name=name, namespace=namespace, is_install=True)
    docs = []
    for template, text in sorted(manifests.items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                docs.append(doc)
    return docs


def render_all() -> list[tuple[str, Path | None, str, str, list[dict]]]:
    """(label, values file, release, namespace, rendered objects) for every render."""
    out = []
    with helm.Chart.load(CHART) as chart:
        for values_file, name, namespace in RENDERS:
            out.append((label(values_file, name, namespace), values_file, name, namespace,
                        render(chart, load_values(values_file), name, namespace)))
    return out


def grants(docs: list[dict], kind: str) -> set[tuple[str, str, str]]:
    out = set()
    for d in docs:
        if d.get("kind") != kind:
            continue
        for rule in d.get("rules", []):
            for g in rule.get("apiGroups", []):
                for r in rule.get("resources", []):
                    for v in rule.get("verbs", []):
                        out.add((g, r, v))
    return out


def plain_manifests() -> list[dict]:
    docs = []
    for f in sorted((ROOT / "manifests").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def without_instance_label(pod_template: dict) -> dict:
    t = copy.deepcopy(pod_template)
    t["metadata"]["labels"].pop("app.kubernetes.io/instance", None)
    for c in t["spec"]["containers"]:
        c.pop("imagePullPolicy", None)  # IfNotPresent, the default for a pinned tag
    return t


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, cond: bool, what: str, detail: str = "") -> None:
        if cond:
            self.passed += 1
        else:
            self.failures.append(f"{what}{': ' + detail if detail else ''}")
            print(f"FAIL {what}{': ' + detail if detail else ''}")


def check_render(c: Checks, where: str, docs: list[dict], name: str, namespace: str, values: dict, plain: list[dict]) -> None:
    kinds = [d["kind"] for d in docs]
    c.ok(sorted(kinds) == sorted(KINDS), f"{where}: renders one of each of {sorted(KINDS)}", f"got {sorted(kinds)}")
    for d in docs:
        ns = d["metadata"].get("namespace")
        want = None if d["kind"] in CLUSTER_SCOPED else namespace
        c.ok(ns == want, f"{where}: {d['kind']} {d['metadata'].get('name')} has namespace {want}", f"has {ns}")
    for kind in ("ClusterRole", "Role"):
        got, want = grants(docs, kind), grants(plain, kind)
        c.ok(got == want, f"{where}: the {kind} grants what manifests/rbac.yaml's does",
             f"only in the chart: {sorted(got - want)}; only in manifests/rbac.yaml: {sorted(want - got)}")
    for binding, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        b = one(docs, binding)
        c.ok(b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": one(docs, role)["metadata"]["name"]},
             f"{where}: the {binding} refers to the {role}", json.dumps(b["roleRef"]))
        c.ok(b["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
             f"{where}: the {binding} binds the release's ServiceAccount", json.dumps(b["subjects"]))
    ds = one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = values["adminPort"]
    c.ok(pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"] == name, f"{where}: the pod runs as the ServiceAccount")
    volumes = {v["name"]: v for v in pod["volumes"]}
    cm = one(docs, "ConfigMap")
    c.ok(volumes["config"]["configMap"]["name"] == cm["metadata"]["name"], f"{where}: the pod mounts the ConfigMap")
    c.ok(volumes["secrets"]["secret"]["secretName"] == values["credentialsSecret"], f"{where}: the pod mounts credentialsSecret")
    c.ok(container["ports"] == [{"name": "admin", "containerPort": port}], f"{where}: the admin port is adminPort", json.dumps(container["ports"]))
    c.ok(ds["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/port") == str(port), f"{where}: Prometheus is told the admin port")
    c.ok(container["image"] == f"{values['image']['repository']}:{values['image']['tag']}", f"{where}: the image", container["image"])
    c.ok(container["args"][-1] == values["logFormat"], f"{where}: --log-format is logFormat", json.dumps(container["args"]))
    c.ok(container["resources"] == values["resources"], f"{where}: the resources", json.dumps(container["resources"]))
    config = yaml.safe_load(cm["data"]["config.yaml"])
    c.ok(config.get("pause-configmap") == f"{namespace}/{cm['metadata']['name']}", f"{where}: pause-configmap is the release's ConfigMap",
         str(config.get("pause-configmap")))
    c.ok(config.get("admin") == {"listen": f"0.0.0.0:{port}"}, f"{where}: admin.listen is on adminPort", json.dumps(config.get("admin")))
    le = config.get("leader-election", {})
    c.ok((le.get("lease-name"), le.get("lease-namespace")) == (name, namespace), f"{where}: the Lease is the release's", json.dumps(le))
    c.ok(config.get("evidence", {}).get("namespace") == namespace, f"{where}: evidence is kept in the release's namespace")


def main() -> int:
    if sys.argv[1:] == ["--json"]:
        json.dump([{"label": l, "values": str(v) if v else None, "release": n, "namespace": ns, "objects": docs}
                   for l, v, n, ns, docs in render_all()], sys.stdout)
        return 0
    print(f"helm {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()}, helm-python-sdk {helm.__version__})")
    c = Checks()
    plain = plain_manifests()
    with helm.Chart.load(CHART) as chart:
        for values_file, name, namespace in RENDERS:
            where = label(values_file, name, namespace)
            values = load_values(values_file)
            failed_before = len(c.failures)
            report = helm.lint(CHART, values, strict=True, namespace=namespace, kube_version="v1.33.0")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
            c.ok(not problems, f"{where}: helm lint --strict", json.dumps(problems))
            infos = [m["error"] for m in report["messages"] if m["severity"] < 2]
            try:
                chart.validate_schema(values)
                docs = render(chart, values, name, namespace)
            except helm.HelmError as e:
                c.ok(False, f"{where}: passes values.schema.json and renders", str(e))
                continue
            check_render(c, where, docs, name, namespace, chart.merge_values(values), plain)
            if values_file is None and name == "autohealer":
                want = one(plain, "DaemonSet")["spec"]["template"]
                got = without_instance_label(one(docs, "DaemonSet")["spec"]["template"])
                c.ok(got == want, f"{where}: the DaemonSet's pod is manifests/daemonset.yaml's",
                     f"\nchart: {json.dumps(got, sort_keys=True)}\nplain: {json.dumps(want, sort_keys=True)}")
            if len(c.failures) == failed_before:
                print(f"ok   {where}: lint ({len(infos)} info: {'; '.join(infos) or '-'}), schema, {len(docs)} objects, RBAC = manifests/rbac.yaml")

        bad = sorted(CHART.glob("examples/bad/*.yaml"))
        c.ok(len(bad) >= 1, "there are bad values files to refuse")
        for values_file in bad:
            where = str(values_file.relative_to(ROOT))
            values = load_values(values_file)
            # Each sets one wrong key (its deepest): the refusal must name it and where it is.
            path, v = [], values
            while isinstance(v, dict) and len(v) == 1:
                k, v = next(iter(v.items()))
                path.append(k)
            key, parent = path[-1], "/" + "/".join(path[:-1])
            for how, attempt in (("helm template", lambda: chart.render(values, name="autohealer", namespace="kube-system")),
                                 ("helm lint", lambda: lint_errors(values))):
                try:
                    attempt()
                    c.ok(False, f"{where}: refused by {how}", "it was accepted")
                except helm.HelmError as e:
                    msg = " ".join(str(e).split())
                    c.ok(key in msg and parent in msg, f"{where}: {how} names {'/'.join(path)}", msg)
                    if key in msg:
                        print(f"ok   {where}: {how} refuses it: {msg}")

    print(f"helm checks: {c.passed} ok, {len(c.failures)} failed")
    return 1 if c.failures else 0


def lint_errors(values: dict) -> None:
    report = helm.lint(CHART, values, strict=True, namespace="kube-system")
    if report["errors"]:
        raise helm.HelmValuesError("; ".join(report["errors"]))


if __name__ == "__main__":
    sys.exit(main())
