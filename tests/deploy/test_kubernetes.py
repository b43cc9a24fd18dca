"""The Kubernetes manifests, checked offline: each overlay renders with ``kubectl kustomize``,
every object validates against the Kubernetes schemas (``kubernetes-validate``, strict: an
unknown field fails) and KEDA's objects against their documented fields; and the pieces agree
with each other and with SBA: probes on /healthz and /readyz, autoscalers aimed at the right
Deployments, KEDA watching the job stream the workers' settings name, every environment
variable a real setting, secrets only by reference, and no container running as root."""

from __future__ import annotations

import copy
import functools
import subprocess
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from entrypoints.settings import Settings
from tests.deploy.keda import validate_keda
from tests.deploy.support import K8S, OVERLAYS, ROOT, settings_of, tool

# The oldest Kubernetes the manifests are for (autoscaling/v2, policy/v1, pod security fields)
# and the newest the validator knows.
VERSIONS = ["1.29", latest_version()]
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# Settings that hold credentials: in a manifest they come from a Secret, never as a value.
SECRET_SETTINGS = {
    "SBA_DATABASE_URL",
    "SBA_DATABASE_ADMIN_URL",
    "SBA_REDIS_URL",
    "SBA_BROKER_URL",
    "SBA_RENDER__S3__ACCESS_KEY",
    "SBA_RENDER__S3__SECRET_KEY",
    "SBA_RENDER__LINK_SECRET",
    "SBA_AUTH__ADMIN_TOKEN",
    "SBA_AUTH__JWT__HS256_SECRET",
    "SBA_BILLING__API_KEY",
    "SBA_KB__EMBEDDINGS__API_KEY",
    "SBA_TELEMETRY__METRICS_TOKEN",
}


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = tool("kubectl", "renders the kustomize overlays")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield f"{o['kind']} {o['metadata']['name']}", o["spec"]["template"]["spec"]


def container_env(objects: tuple[dict[str, Any], ...], spec: dict[str, Any]) -> dict[str, str]:
    """What the container sees: its ConfigMaps, then its own variables (a Secret's value stands
    in as a placeholder naming it)."""
    [container] = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(objects, "ConfigMap", ref)["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"secret:{ref['name']}/{ref['key']}"
    return env


def settings_for(overlay: str, kind: str, name: str) -> Settings:
    objects = rendered(overlay)
    spec = one(objects, kind, name)["spec"]["template"]["spec"]
    return settings_of(container_env(objects, spec), f"{overlay}: {kind} {name}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_the_whole_deployment(overlay) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered(overlay))
    assert kinds == sorted(
        [
            "ConfigMap/" + _settings_map(overlay),
            "Deployment/sba-api",
            "Deployment/sba-worker",
            "HorizontalPodAutoscaler/sba-api",
            "Job/sba-migrate",
            "PodDisruptionBudget/sba-api",
            "PodDisruptionBudget/sba-worker",
            "ScaledObject/sba-worker",
            "Service/sba-api",
            "ServiceAccount/sba",
            "TriggerAuthentication/sba-redis",
        ]
    )
    namespaces = {o["metadata"].get("namespace") for o in rendered(overlay)}
    assert len(namespaces) == 1 and None not in namespaces


def _settings_map(overlay: str) -> str:
    """The settings ConfigMap, named with a hash of its content (a change rolls the pods)."""
    [name] = [
        o["metadata"]["name"]
        for o in rendered(overlay)
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("sba-settings-")
    ]
    return name


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay, version) -> None:
    for obj in rendered(overlay):
        if obj["kind"] in KEDA_KINDS:
            validate_keda(obj)
            continue
        kubernetes_validate.validate(obj, version, strict=True)
    so = one(rendered(overlay), "ScaledObject", "sba-worker")
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    kubernetes_validate.validate(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-behavior"},
            "spec": {
                "scaleTargetRef": so["spec"]["scaleTargetRef"],
                "maxReplicas": so["spec"]["maxReplicaCount"],
                "behavior": behavior,
            },
        },
        version,
        strict=True,
    )


def test_the_validators_refuse_a_misspelt_field() -> None:
    objects = rendered(OVERLAYS[0])
    api = copy.deepcopy(one(objects, "Deployment", "sba-api"))
    api["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSIONS[-1], strict=True)
    so = copy.deepcopy(one(objects, "ScaledObject", "sba-worker"))
    so["spec"]["triggers"][0]["metadata"]["lagcount"] = "5"
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(so)
    auth = copy.deepcopy(one(objects, "TriggerAuthentication", "sba-redis"))
    auth["spec"]["secretTargetRef"][0]["secret"] = "sba"
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(auth)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_is_probed_served_and_scaled(overlay) -> None:
    objects = rendered(overlay)
    api = one(objects, "Deployment", "sba-api")
    pod = api["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["serve", "--host", "0.0.0.0"]
    [port] = container["ports"]
    assert port["containerPort"] == settings_for(overlay, "Deployment", "sba-api").http.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "replicas" not in api["spec"]  # the autoscaler's to set

    labels = pod["metadata"]["labels"]
    service = one(objects, "Service", "sba-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()

    hpa = one(objects, "HorizontalPodAutoscaler", "sba-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sba-api",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]

    pdb = one(objects, "PodDisruptionBudget", "sba-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_scale_on_the_job_stream_their_settings_name(overlay) -> None:
    objects = rendered(overlay)
    worker = one(objects, "Deployment", "sba-worker")
    [container] = worker["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["worker"]
    assert "replicas" not in worker["spec"]  # KEDA's to set
    settings = settings_for(overlay, "Deployment", "sba-worker")
    assert settings.broker_url  # from the Secret
    metrics = settings.telemetry.worker_metrics_port
    assert [p["containerPort"] for p in container["ports"]] == [metrics]
    assert settings.telemetry.worker_metrics_host == "0.0.0.0"
    assert container["livenessProbe"]["tcpSocket"]["port"] == container["ports"][0]["name"]
    # A worker's grace on SIGTERM fits in the pod's.
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.worker.shutdown_grace_s < grace

    so = one(objects, "ScaledObject", "sba-worker")
    assert so["spec"]["scaleTargetRef"]["name"] == "sba-worker"
    assert so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    triggers = so["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    for t in triggers:
        assert t["metadata"]["stream"] == settings.job_stream
        assert t["metadata"]["consumerGroup"] == f"{settings.job_stream}:workers"
        auth = one(objects, "TriggerAuthentication", t["authenticationRef"]["name"])
        assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {"sba"}
    # Waiting jobs (the group's lag) and running ones (its pending entries) both count.
    assert any("lagCount" in t["metadata"] for t in triggers)
    assert any("pendingEntriesCount" in t["metadata"] for t in triggers)
    assert 1 <= so["spec"]["minReplicaCount"] < so["spec"]["maxReplicaCount"]

    pdb = one(objects, "PodDisruptionBudget", "sba-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migration_job_upgrades_the_database_the_api_uses(overlay) -> None:
    job = one(rendered(overlay), "Job", "sba-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    migrate = settings_for(overlay, "Job", "sba-migrate")
    api = settings_for(overlay, "Deployment", "sba-api")
    assert migrate.database_url == api.database_url


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_setting_and_secrets_come_by_reference(overlay) -> None:
    objects = rendered(overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]
    for where, spec in pod_specs(objects):
        [container] = spec["containers"]
        env = container_env(objects, spec)
        settings_of(env, f"{overlay}: {where}")  # every name real, every value parses
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for name, value in env.items():
            if name in SECRET_SETTINGS:
                assert value.startswith("secret:"), f"{where}: {name} is set as a value"
            if name.endswith("_FILE"):
                # A secret file lies in a mounted Secret volume that carries that key.
                directory, _, key = value.rpartition("/")
                volume = volumes[mounts[directory]]
                keys = [i["key"] for i in volume["secret"].get("items", [])]
                assert key in keys, f"{where}: {name} names {key}, not mounted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_runs_as_root_or_writes_its_image(overlay) -> None:
    image_user = _image_user()
    for where, spec in pod_specs(rendered(overlay)):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] == image_user, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "limits" in c["resources"] and "requests" in c["resources"], where
            # Where a read-only image still needs to write: temporary files.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where


def _image_user() -> int:
    users = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    return int(users[-1].split(":")[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrate_first_step_applies_the_job_and_what_it_needs_and_no_workload(overlay) -> None:
    """The README's first apply selects ``app.kubernetes.io/component notin (api,worker)``."""
    objects = rendered(overlay)
    first = [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        not in ("api", "worker")
    ]
    kinds = {o["kind"] for o in first}
    assert "Job" in kinds and not kinds & {"Deployment", "HorizontalPodAutoscaler", "ScaledObject"}
    job = one(objects, "Job", "sba-migrate")["spec"]["template"]["spec"]
    needs = {("ServiceAccount", job["serviceAccountName"])}
    needs |= {("ConfigMap", s["configMapRef"]["name"]) for s in job["containers"][0]["envFrom"]}
    assert needs <= {(o["kind"], o["metadata"]["name"]) for o in first}
