#!/usr/bin/env python3
"""Every Kubernetes object we ship, against the Kubernetes API schemas (kubernetes-validate),
strictly: an unknown field is an error, as `kubectl apply --validate=strict` makes it.

Objects: every document of manifests/*.yaml and manifests/monitoring/*.yaml (not the
Grafana dashboard, which is JSON for Grafana), and every object the chart renders for the
default values and each charts/autohealer/examples/*.yaml (through .ci/helm_check.py).
Versions: Kubernetes 1.33 (the API the code is built against: k8s-openapi's v1_33) and
the newest one the installed kubernetes-validate knows.
Objects of custom resources (the PrometheusRule) have no schema there: they are skipped,
saying so; a core kind without a schema is a failure.

    python .ci/k8s_schemas.py

Needs `pip install kubernetes-validate helm-python-sdk` (.ci/run installs them into a venv).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate import utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm_check  # noqa: E402

ROOT = helm_check.ROOT
VERSIONS = ["1.33", utils.major_minor(utils.latest_version())]


def is_core(api_version: str) -> bool:
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    return "." not in group or group.endswith(".k8s.io")


def sources() -> list[tuple[str, dict]]:
    out = []
    for f in sorted((ROOT / "manifests").glob("*.yaml")) + sorted((ROOT / "manifests" / "monitoring").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        for d in docs:
            out.append((str(f.relative_to(ROOT)), d))
    for where, _, _, _, docs in helm_check.render_all():
        out += [(f"chart, {where}", d) for d in docs]
    return out


def main() -> int:
    print(f"kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {', '.join(VERSIONS)}, strict")
    failed = passed = skipped = 0
    objects = sources()
    for where, obj in objects:
        if "apiVersion" not in obj or "kind" not in obj:
            print(f"skip {where}: not a Kubernetes object (no apiVersion/kind)")
            skipped += 1
            continue
        what = f"{where}: {obj['kind']} {obj.get('metadata', {}).get('name')}"
        ok_in = []
        for version in VERSIONS:
            try:
                ok_in.append(utils.validate(obj, version, strict=True))
                passed += 1
            except utils.SchemaNotFoundError:
                if is_core(obj["apiVersion"]):
                    failed += 1
                    print(f"FAIL {what}: no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes {version}")
                else:
                    skipped += 1
                    print(f"skip {what}: {obj['apiVersion']} is a custom resource (a CRD), not in the Kubernetes {version} schemas")
            except utils.ValidationError as e:
                failed += 1
                path = ".".join(str(p) for p in e.path)
                print(f"FAIL {what} against Kubernetes {e.version}: {path}: {e.message}")
        if ok_in:
            print(f"ok   {what} (Kubernetes {', '.join(ok_in)})")

    # The validation is strict: an unknown field and a wrong type are refused.
    ds = next(o for _, o in objects if o.get("kind") == "DaemonSet")

    def unknown_field(c: dict) -> None:
        c["imagePullPolicyy"] = "Always"

    def port_as_text(c: dict) -> None:
        c["ports"][0]["containerPort"] = "9102"

    for change in (unknown_field, port_as_text):
        bad = copy.deepcopy(ds)
        change(bad["spec"]["template"]["spec"]["containers"][0])
        try:
            utils.validate(bad, VERSIONS[0], strict=True)
            failed += 1
            print(f"FAIL a DaemonSet with {change.__name__} was accepted: the validation is not strict")
        except utils.ValidationError as e:
            passed += 1
            print(f"ok   a DaemonSet with {change.__name__} is refused: {'.'.join(str(p) for p in e.path)}: {e.message}")
    print(f"schema checks: {passed} ok, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
