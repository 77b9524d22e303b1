"""Fixtures and matrix parametrization for keel's own tests.

A test that takes a `combo` argument runs once per combination of the matrix built from
copier.yml (see matrix.py). Which combinations:

- `KEEL_MATRIX=full` (the default): every combination copier.yml accepts.
- `KEEL_MATRIX=smoke`: the smoke subset only, a few combinations that use every choice at least
  once (`make test-fast`). Other tests are unaffected.
- Within the full matrix, the smoke combinations also carry the `smoke` marker, so `-m smoke`
  selects just the smoke renders and runs.

A test that takes a `python_version` argument runs once per python_version choice in copier.yml.

Local servers: `require_services(combo)` skips a test whose combination needs a server that is not
reachable, unless KEEL_REQUIRE_SERVICES=1 (CI), where an unreachable server fails the test.

The copie fixtures render the repository's working tree (from tests/snapshot.py's copy) wherever
pytest is started from, and user-level copier settings never leak in: COPIER_SETTINGS_PATH points
at a settings file with nothing in it (`{}`).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from matrix import ROOT, Combo, full_matrix, python_versions, smoke_matrix
from snapshot import template_snapshot

MATRIX_ENV = "KEEL_MATRIX"
REQUIRE_SERVICES_ENV = "KEEL_REQUIRE_SERVICES"


def pytest_configure(config: pytest.Config) -> None:
    # pytest-copie's --template defaults to the working directory. Render the repository's working
    # tree from a snapshot that is not a git clone, which copier would clone again for every copy.
    if Path(config.option.template).resolve() in (ROOT, Path.cwd().resolve()):
        config.option.template = str(template_snapshot())


@pytest.fixture(scope="session", autouse=True)
def _isolated_copier_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point copier at a settings file without defaults or trusted sources."""
    # An empty mapping: copier refuses a file with no YAML document at all.
    settings = tmp_path_factory.mktemp("copier-settings") / "settings.yml"
    settings.write_text("{}\n", encoding="utf-8")
    previous = os.environ.get("COPIER_SETTINGS_PATH")
    os.environ["COPIER_SETTINGS_PATH"] = str(settings)
    yield settings
    if previous is None:
        os.environ.pop("COPIER_SETTINGS_PATH", None)
    else:
        os.environ["COPIER_SETTINGS_PATH"] = previous


def selected_matrix() -> tuple[Combo, ...]:
    """The combinations KEEL_MATRIX selects."""
    choice = os.environ.get(MATRIX_ENV, "full")
    if choice == "full":
        return full_matrix()
    if choice == "smoke":
        return smoke_matrix()
    raise pytest.UsageError(f"{MATRIX_ENV} must be 'full' or 'smoke', got {choice!r}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "combo" in metafunc.fixturenames:
        smoke = set(smoke_matrix())
        metafunc.parametrize(
            "combo",
            [
                pytest.param(
                    combo, id=combo.id, marks=[pytest.mark.smoke] if combo in smoke else []
                )
                for combo in selected_matrix()
            ],
        )
    if "python_version" in metafunc.fixturenames:
        metafunc.parametrize("python_version", python_versions())


def _cost(item: pytest.Item) -> int:
    """A test's rank by how long it runs: 2 for one test of several minutes or one that installs
    a project at an unusual size, 1 for a project installed and tested, 0 for the rest."""
    module = item.path.name
    if module == "test_update.py" or item.name.startswith("test_deployment_size_variant"):
        return 2
    return 1 if item.get_closest_marker("slow") else 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Longest first. pytest-xdist hands each worker a run of consecutive tests and lets an idle
    # worker take half of another's queue; a long test near the end of the list would run alone
    # after everything else is done, one core idle (a variant or an update test: 1 to 5 minutes).
    items.sort(key=_cost, reverse=True)


def services_required() -> bool:
    """Whether an unreachable local server fails a test (KEEL_REQUIRE_SERVICES=1) or skips it."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "") == "1"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def check_services(combo: Combo) -> None:
    """Skip, or fail under KEEL_REQUIRE_SERVICES=1, when a server the combination needs is down."""
    missing = [
        f"{name} on 127.0.0.1:{port}" for name, port in combo.services() if not _reachable(port)
    ]
    if not missing:
        return
    reason = f"{combo.id} needs {', '.join(missing)}, which is not reachable"
    if services_required():
        pytest.fail(
            f"{reason} ({REQUIRE_SERVICES_ENV}=1); start it with `bash ../shared/services.sh`"
        )
    pytest.skip(f"{reason}; set {REQUIRE_SERVICES_ENV}=1 to fail instead")


Render = Callable[[dict[str, Any]], Path]


@pytest.fixture
def render(copie: Any) -> Render:
    """Render the template with the given answers; return the project directory."""

    def _render(answers: dict[str, Any]) -> Path:
        # copier lists every file it creates on stderr: keep that out of failure reports.
        with contextlib.redirect_stderr(io.StringIO()) as copier_output:
            result = copie.copy(extra_answers=answers)
        if result.exception is not None:
            pytest.fail(
                f"render failed with {answers}: {result.exception!r}\n{copier_output.getvalue()}"
            )
        assert result.project_dir is not None
        return Path(result.project_dir)

    return _render


@pytest.fixture
def require_services() -> Callable[[Combo], None]:
    """check_services, for tests: call it with the combination under test."""
    return check_services
