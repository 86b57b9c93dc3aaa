"""deploy/'s Kubernetes manifests, Dockerfile, lock file and compose file: valid against
Kubernetes' schemas (kubernetes-validate, offline), and hardened as deploy/README says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from broker.names import Names

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# Custom resources: no schema in kubernetes-validate; checked by the tests below.
CUSTOM = {"Kustomization", "PodMonitor", "PrometheusRule", "ScaledObject"}
ROLES = ("gateway", "worker", "reaper")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def every_manifest() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.rglob("*.yaml")) for doc in documents(path)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in every_manifest() if doc["kind"] == kind}


def config() -> dict[str, str]:
    return by_kind("ConfigMap")["agent-fleet"]["data"]  # type: ignore[no-any-return]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template: the Deployments' and the CronJob's."""
    specs = {name: d["spec"]["template"]["spec"] for name, d in by_kind("Deployment").items()}
    for name, job in by_kind("CronJob").items():
        specs[name] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


@pytest.mark.parametrize(
    ("path", "doc"),
    [(p, d) for p, d in every_manifest() if d["kind"] not in CUSTOM],
    ids=lambda v: v.name if isinstance(v, Path) else v["kind"],
)
def test_every_manifest_is_valid_kubernetes(path: Path, doc: dict[str, Any]) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_optional_ones() -> None:
    listed = set(documents(K8S / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {p for p in present if ".example." not in p}
    monitoring = documents(K8S / "monitoring" / "kustomization.yaml")[0]["resources"]
    assert all((K8S / "monitoring" / name).exists() for name in monitoring)


def test_every_pod_is_hardened() -> None:
    specs = pod_specs()
    assert set(specs) == {"fleet-gateway", "fleet-worker", "fleet-reaper", "fleet-purge"}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None and user[1] != "0"
    for name, spec in specs.items():
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] and pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == (user[1], user[2]), name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert "limits" in container["resources"], name


def test_workers_and_reapers_are_probed_on_their_health_endpoint() -> None:
    specs, port = pod_specs(), int(config()["FLEET_METRICS_PORT"])
    for name in ("fleet-worker", "fleet-reaper"):
        [container] = specs[name]["containers"]
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        probe = container["livenessProbe"]["httpGet"]
        assert probe == {"path": "/healthz", "port": "metrics"}, name


def test_pods_outlive_their_graceful_stop() -> None:
    specs = pod_specs()
    grace = float(config()["FLEET_SHUTDOWN_GRACE"])
    assert specs["fleet-worker"]["terminationGracePeriodSeconds"] > grace
    [gateway] = specs["fleet-gateway"]["containers"]
    sleep = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) >= 5
    # the preStop, then uvicorn's graceful stop (5 s, gateway/app.py), before SIGKILL
    assert specs["fleet-gateway"]["terminationGracePeriodSeconds"] > int(sleep[1]) + 5
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert int(compose["services"]["worker"]["stop_grace_period"].rstrip("s")) > grace


def test_every_role_has_a_disruption_budget() -> None:
    deployments = by_kind("Deployment")
    budgets = by_kind("PodDisruptionBudget")
    for role in ROLES:
        labels = deployments[f"fleet-{role}"]["spec"]["template"]["metadata"]["labels"]
        budget = budgets[f"fleet-{role}"]["spec"]
        assert budget["selector"]["matchLabels"].items() <= labels.items(), role
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 1, role


def test_workers_scale_on_the_dispatch_backlog_and_owned_conversations() -> None:
    [scaled] = by_kind("ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "fleet-worker"
    triggers = {t["type"]: t["metadata"] for t in scaled["spec"]["triggers"]}
    assert triggers["rabbitmq"]["queueName"] == Names(config()["FLEET_NAMESPACE"]).dispatch_queue
    assert triggers["rabbitmq"]["mode"] == "QueueLength"
    [worker] = pod_specs()["fleet-worker"]["containers"]
    assert triggers["rabbitmq"]["hostFromEnv"] in {env["name"] for env in worker["env"]}
    assert "fleet_conversations_owned" in triggers["prometheus"]["query"]
    [hpa] = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fleet-worker"
    assert scaled["spec"]["minReplicaCount"] == hpa["spec"]["minReplicas"] >= 2


def test_monitoring_resources_select_the_fleet() -> None:
    [monitor] = by_kind("PodMonitor").values()
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "agent-fleet"}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} == {"http", "metrics"}


def test_the_ingress_example_keeps_socketio_sessions_on_one_gateway() -> None:
    ingresses = by_kind("Ingress")
    socketio = ingresses["fleet-socketio"]
    annotations = socketio["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-path"] == "/socket.io/"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 25
    [path] = socketio["spec"]["rules"][0]["http"]["paths"]
    assert path["path"] == "/socket.io/"
    assert "affinity" not in str(ingresses["fleet-api"]["metadata"]["annotations"])


def test_the_network_policy_opens_only_what_the_fleet_uses() -> None:
    policies = by_kind("NetworkPolicy")
    egress = {
        p["port"] for rule in policies["agent-fleet"]["spec"]["egress"] for p in rule["ports"]
    }
    assert egress == {53, 6379, 5672}
    clients = policies["fleet-gateway-clients"]["spec"]["ingress"]
    assert [p["port"] for rule in clients for p in rule["ports"]] == [8000]


def test_the_image_builds_from_the_lock_as_a_non_root_user_with_a_healthcheck() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    healthcheck = re.search(r"^HEALTHCHECK .* CMD (.*)$", dockerfile, re.MULTILINE)
    assert healthcheck is not None and healthcheck[1] == '["fleet", "healthcheck"]'
    ignored = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored.index("!deploy/requirements.lock") > ignored.index("deploy")


def test_the_lock_pins_every_dependency_with_hashes() -> None:
    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    requirements = [line for line in lock.splitlines() if line and line[0] not in "# "]
    assert len(requirements) == len(pinned) >= 30  # every requirement pinned, hashes follow
    assert lock.count("--hash=sha256:") >= len(pinned)
    assert not re.search(r"--(index-url|extra-index-url|find-links|trusted-host)", lock)
    locked = {canonicalize_name(name): version for name, version in pinned.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        wanted = Requirement(dependency)
        name = canonicalize_name(wanted.name)
        assert name in locked, f"{name} is not in the lock: make lock"
        assert wanted.specifier.contains(locked[name]), f"{name}=={locked[name]} vs {wanted}"
