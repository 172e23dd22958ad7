"""The deployment files: Kubernetes manifests against the Kubernetes schemas, the systemd
unit through systemd-analyze, the compose stack parsed and its files present, and every
sidecar config they carry accepted by the sidecar's own validation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitoring.alerts import rule_groups
from monitoring.config import MonitoringConfig
from sidecar.config import parse_config

from .support.paths import REPO

DEPLOY = REPO / "deploy"
KUBE_VERSION = "1.30.0"
NATIVE = {"ConfigMap", "StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/base/kustomization.yaml").read_text())
    resources = {}
    for name in kustomization["resources"]:
        for doc in documents(DEPLOY / "kubernetes/base" / name):
            resources[doc["kind"]] = doc
    return resources


@pytest.mark.parametrize("kind", sorted(NATIVE))
def test_native_manifests_validate_against_the_kubernetes_schema(kind: str) -> None:
    kubernetes_validate.validate(base()[kind], KUBE_VERSION, strict=True)


def test_validation_catches_a_broken_manifest() -> None:
    broken = base()["StatefulSet"]
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_statefulset_probes_ports_and_selectors_fit_together() -> None:
    resources = base()
    sts = resources["StatefulSet"]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = resources[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), kind
    port_names = {p["name"] for p in resources["Service"]["spec"]["ports"]}
    assert [e["port"] for e in resources["ServiceMonitor"]["spec"]["endpoints"]] == ["http"]
    assert "http" in port_names


@pytest.mark.services
def test_prometheusrule_is_the_shipped_rules_and_promtool_accepts_it(tmp_path: Path) -> None:
    rule = base()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == rule_groups(MonitoringConfig())
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "rules", str(extracted)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def embedded_configs() -> dict[str, Any]:
    configs = {
        "kubernetes/base": yaml.safe_load(base()["ConfigMap"]["data"]["config.yaml"]),
        "kubernetes/sharded": yaml.safe_load(
            documents(DEPLOY / "kubernetes/overlays/sharded/configmap-patch.yaml")[0]["data"][
                "config.yaml"
            ]
        ),
        "container": yaml.safe_load((DEPLOY / "container/config.yaml").read_text()),
        "systemd": yaml.safe_load((DEPLOY / "systemd/config.yaml").read_text()),
    }
    return configs


@pytest.mark.parametrize("name", sorted(embedded_configs()))
def test_every_shipped_sidecar_config_is_valid(name: str) -> None:
    config = parse_config(embedded_configs()[name], name)
    assert config.state_dir == Path("/var/lib/wa-sidecar")
    assert config.http.listen.host == "0.0.0.0"


def test_sharded_overlay_uses_leases_and_shared_session_stores() -> None:
    config = parse_config(embedded_configs()["kubernetes/sharded"])
    assert config.leases is not None
    assert all(a.postgres_url_env for a in config.accounts)
    patch = documents(DEPLOY / "kubernetes/overlays/sharded/statefulset-patch.yaml")[0]
    env = {e["name"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {a.postgres_url_env for a in config.accounts} <= env
    assert patch["spec"]["replicas"] > 1


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian: systemd)")
    unit = (DEPLOY / "systemd/wa-sidecar.service").read_text()
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=wa-sidecar",
        "Restart=on-failure",
        "User=wa-sidecar",
    ):
        assert setting in unit
    # verify checks that ExecStart exists: point it at this checkout's installed command
    local = tmp_path / "wa-sidecar.service"
    local.write_text(
        unit.replace(
            "/opt/wa-sidecar/.venv/bin/wa-sidecar",
            str(Path(sys.executable).with_name("wa-sidecar")),
        )
    )
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.replace("Type=simple", "Type=sideways"))
    assert (
        subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True).returncode
        != 0
    )


def test_compose_stack_parses_and_mounts_files_that_exist() -> None:
    compose_file = DEPLOY / "container/compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    assert set(compose["services"]) == {
        "sidecar",
        "prometheus",
        "alertmanager",
        "grafana",
        "firestore",
    }
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (compose_file.parent / source).exists(), f"{name} mounts missing {source}"
    build = compose["services"]["sidecar"]["build"]
    assert (compose_file.parent / build["context"] / build["dockerfile"]).exists()
    containerfile = (DEPLOY / "container/Containerfile").read_text()
    assert "USER 10001" in containerfile
    assert "/healthz" in containerfile
    assert "VOLUME /var/lib/wa-sidecar" in containerfile
