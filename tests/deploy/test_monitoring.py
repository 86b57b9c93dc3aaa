"""deploy/'s alerts, Prometheus configuration and Grafana dashboard: valid for promtool,
the alerts fire as intended, and every metric they name is exported by some role."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from broker.settings import Settings
from fleet.harness import LocalFleet, free_port
from tests.support import http

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "agent-fleet.json"
METRIC = re.compile(r"\b(fleet_[a-z0-9_]+)")
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def promtool(*args: str, cwd: Path = DEPLOY / "prometheus") -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    result = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def referenced() -> set[str]:
    """Every metric name the alerts, the dashboard and the autoscalers use."""
    texts = [ALERTS.read_text(), *dashboard_exprs()]
    texts += [p.read_text() for p in (DEPLOY / "k8s").rglob("*.yaml")]
    return set(METRIC.findall("\n".join(texts)))


def test_the_alert_rules_are_valid_and_fire_as_intended() -> None:
    assert "SUCCESS: 8 rules found" in promtool("check", "rules", "alerts.yaml")
    promtool("test", "rules", "alerts.test.yaml")


def test_the_compose_prometheus_configuration_is_valid() -> None:
    promtool("check", "config", "prometheus.yml")


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 12
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel
    # Each query as a recording rule: promtool parses it as Prometheus would.
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]})
    )
    assert f"SUCCESS: {len(rules)} rules found" in promtool(
        "check", "rules", "dashboard.yaml", cwd=tmp_path
    )


async def test_every_metric_they_name_is_exported_by_some_role(settings: Settings) -> None:
    port, worker_port, reaper_port = free_port(), free_port(), free_port()
    async with LocalFleet(settings) as fleet:
        await fleet.gateway(port)
        await fleet.worker(FLEET_METRICS_PORT=str(worker_port))
        await fleet.reaper(FLEET_METRICS_PORT=str(reaper_port))
        exported: set[str] = set()
        for metrics_port in (port, worker_port, reaper_port):
            async with http(f"http://127.0.0.1:{metrics_port}") as api:
                async with asyncio.timeout(10):  # the leader's figures come with its first count
                    while "fleet_live_processes" not in (text := (await api.get("/metrics")).text):
                        if metrics_port != reaper_port:
                            break
                        await asyncio.sleep(0.1)
            exported |= set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    missing = {name for name in referenced() if _family(name, exported) not in exported}
    assert not missing, f"named in deploy/ but exported by no role: {sorted(missing)}"


def _family(name: str, exported: set[str]) -> str:
    """The metric family a series name belongs to (a histogram's _bucket, _count, _sum)."""
    for suffix in HISTOGRAM_SERIES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported:
            return name.removesuffix(suffix)
    return name


def test_the_prometheus_rule_for_kubernetes_has_the_same_alerts() -> None:
    rule = yaml.safe_load((DEPLOY / "k8s" / "monitoring" / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
