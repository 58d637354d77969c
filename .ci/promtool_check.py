#!/usr/bin/env python3
"""The alerting rules through real promtool (Debian's `prometheus` package).

manifests/monitoring/alerts.yaml is a PrometheusRule (Prometheus Operator): its
spec.groups are written as a plain rules file, alerts.rules.yaml, beside a copy of
manifests/monitoring/alerts-test.yaml in a temporary directory, then
  promtool check rules alerts.rules.yaml
  promtool test rules alerts-test.yaml
and every alert must have a test case where it fires and one where it stays silent.

    python .ci/promtool_check.py     # promtool from $PROMTOOL_BIN or PATH

Needs PyYAML (the tools venv of .ci/run has it) and promtool (apt-get install prometheus).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "manifests" / "monitoring"


def main() -> int:
    promtool = os.environ.get("PROMTOOL_BIN") or shutil.which("promtool")
    if not promtool:
        print("FAIL promtool not found: apt-get install prometheus, or set PROMTOOL_BIN")
        return 1
    version = subprocess.run([promtool, "--version"], capture_output=True, text=True).stdout.splitlines()
    print(version[0] if version else promtool)
    rule = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert rule["kind"] == "PrometheusRule", rule["kind"]
    groups = rule["spec"]["groups"]
    tests = yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())
    failed = 0
    with tempfile.TemporaryDirectory(prefix="autohealer-promtool-") as tmp:
        rules_file = Path(tmp) / "alerts.rules.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        assert tests["rule_files"] == [rules_file.name], tests["rule_files"]
        shutil.copy(MONITORING / "alerts-test.yaml", tmp)
        for args in (["check", "rules", rules_file.name], ["test", "rules", "alerts-test.yaml"]):
            r = subprocess.run([promtool, *args], cwd=tmp, capture_output=True, text=True)
            out = (r.stdout + r.stderr).strip()
            print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} promtool {' '.join(args)}: {' '.join(out.split()) if r.returncode == 0 else out}")
            failed += r.returncode != 0

    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    for alert in alerts:
        cases = [c for t in tests["tests"] for c in t.get("alert_rule_test", []) if c["alertname"] == alert]
        fires = sum(1 for c in cases if c.get("exp_alerts"))
        silent = sum(1 for c in cases if not c.get("exp_alerts"))
        full = all(a.get("exp_labels") and a.get("exp_annotations", {}).get("summary") for c in cases for a in c.get("exp_alerts") or [])
        ok = fires and silent and full
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {alert}: tested firing {fires}x (labels and annotations), silent {silent}x")
    print(f"promtool checks: {len(alerts) + 2 - failed} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
