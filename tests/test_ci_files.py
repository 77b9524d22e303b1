"""The CI files every service gets: the GitHub Actions workflow, the pre-commit hooks and the
Renovate config.

For every combination, the workflow passes actionlint (with shellcheck on its scripts) and zizmor
offline with no finding, runs exactly the README's install, lint, type-check and test commands,
starts a service container for each server the combination's tests use, and keeps to the
hardening rules (actions pinned by commit, read-only token, no persisted credentials, a
concurrency group, a timeout per job). Rendering a whole service per combination costs 1 to 2 s,
which tests/test_render.py already pays: here copier renders a copy of the template that holds
only the files these tests read, about a third of that.

Slow tests: pre-commit runs its hooks on a rendered service, offline; and the workflow's release
check, run as GitHub runs it, tells a service made from an older keel release that a newer one is
out.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from matrix import ROOT, Combo, full_matrix
from test_generated import mypy_cache, project_environment, run, uv_command  # noqa: F401
from test_update import RELEASES, commit_all, git, template_repo, untagged_repo  # noqa: F401
from test_update import render as render_release

# What these tests read from a render; copier renders nothing else of the template.
CI_FILES = (".github", "README.md.jinja", "renovate.json", ".pre-commit-config.yaml")
# The service's budget module, which copier's context hook (extensions/keel.py) loads: kept in the
# copy, left out of the render.
BUDGET_MODULE = "src/{{ package_name }}/infra/{% if has_pool %}budget.py{% endif %}"
VENV_BIN = Path(sys.executable).parent
PINNED_USE = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d[\w.]*$")
APT_STEP = "Install the servers the tests start themselves"


@pytest.fixture(scope="session")
def ci_template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template snapshot with only the files of CI_FILES (and the answers file) to render."""
    snapshot = Path(request.config.option.template)
    copy = tmp_path_factory.mktemp("ci-template") / "keel"
    shutil.copytree(snapshot, copy, ignore=shutil.ignore_patterns("template"))
    for path in (snapshot / "template").iterdir():
        if path.name in CI_FILES or path.name.endswith("answers_file}}.jinja"):
            target = copy / "template" / path.name
            if path.is_dir():
                shutil.copytree(path, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    budget = copy / "template" / BUDGET_MODULE
    budget.parent.mkdir(parents=True)
    shutil.copy2(snapshot / "template" / BUDGET_MODULE, budget)
    return copy


def render_ci(template: Path, destination: Path, answers: dict[str, Any]) -> Path:
    with contextlib.redirect_stderr(io.StringIO()):
        copier.run_copy(
            str(template),
            str(destination),
            data=answers,
            defaults=True,
            unsafe=True,
            quiet=True,
            exclude=["src"],
        )
    return destination


def load_workflow(project: Path) -> dict[Any, Any]:
    workflow: dict[Any, Any] = yaml.safe_load(
        (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    )
    # YAML 1.1 reads the key `on` as true.
    workflow["on"] = workflow.pop(True)
    return workflow


def readme_commands(project: Path) -> list[str]:
    """`uv sync` from the README's "Run it", then every command of its "Test it" block."""
    readme = (project / "README.md").read_text(encoding="utf-8")

    def block(heading: str) -> list[str]:
        section = readme.split(f"## {heading}\n", 1)[1]
        code = section.split("```sh\n", 1)[1].split("```", 1)[0]
        return [line.split(" #", 1)[0].strip() for line in code.splitlines() if line.strip()]

    install = [line for line in block("Run it") if line == "uv sync"]
    return install + [command.strip() for line in block("Test it") for command in line.split("&&")]


def lint(command: list[str], directory: Path) -> None:
    completed = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, check=False, timeout=120
    )
    assert completed.returncode == 0, f"{command[0]}:\n{completed.stdout}{completed.stderr}"


# Workflows this pytest worker has linted already: many combinations render the same workflow
# (it depends on the servers, not on the metrics or the task queue's library).
LINTED: set[str] = set()


def lint_workflow(workflow_file: Path) -> None:
    """actionlint, with shellcheck on the run scripts, and zizmor: both with no finding."""
    text = workflow_file.read_text(encoding="utf-8")
    if text in LINTED:
        return
    lint(
        [
            str(VENV_BIN / "actionlint"),
            f"-shellcheck={VENV_BIN / 'shellcheck'}",
            "-pyflakes=",
            "-no-color",
            str(workflow_file),
        ],
        workflow_file.parent,
    )
    # Offline: no audit that asks GitHub. The regular persona's findings, none; the pedantic
    # one adds service images by tag rather than digest, which this machine cannot look up.
    lint(
        [str(VENV_BIN / "zizmor"), "--offline", "--no-progress", str(workflow_file)],
        workflow_file.parent,
    )
    LINTED.add(text)


def expected_ports(combo: Combo) -> set[int]:
    return {port for _, port in combo.services()}


def test_ci_files_of_the_combination(ci_template: Path, tmp_path: Path, combo: Combo) -> None:
    project = render_ci(ci_template, tmp_path / "service", combo.data())
    lint_workflow(project / ".github" / "workflows" / "ci.yml")

    workflow = load_workflow(project)
    checks = workflow["jobs"]["checks"]
    runs = [step["run"] for step in checks["steps"] if "run" in step]
    others = [step["name"] for step in checks["steps"] if "run" in step and step.get("name")]
    # The same commands, each once; lint and type-check before the longer tests.
    commands = [run for run in runs if run.startswith("uv ")]
    assert sorted(commands) == sorted(readme_commands(project))
    assert commands[0] == "uv sync" and commands[-1] == "uv run pytest"
    assert set(others) <= {APT_STEP}

    ports = {
        int(mapping.split(":")[0])
        for service in checks.get("services", {}).values()
        for mapping in service["ports"]
    }
    assert ports == expected_ports(combo)
    assert checks.get("env", {}).get("REQUIRE_SERVICES") == ("1" if ports else None)


BAD_WORKFLOW = """\
on: pull_request
jobs:
  greet:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.pull_request.title }}"
"""


@pytest.mark.smoke
def test_the_linters_find_what_they_are_for(tmp_path: Path) -> None:
    """A tag for a commit and a pull request's title in a script: both linters object."""
    workflow_file = tmp_path / ".github" / "workflows" / "bad.yml"
    workflow_file.parent.mkdir(parents=True)
    workflow_file.write_text(BAD_WORKFLOW, encoding="utf-8")
    with pytest.raises(AssertionError) as found:
        lint_workflow(workflow_file)
    assert "untrusted" in str(found.value)  # actionlint, which runs first
    zizmor = subprocess.run(
        [str(VENV_BIN / "zizmor"), "--offline", "--no-progress", str(workflow_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "unpinned-uses" in zizmor.stdout and "template-injection" in zizmor.stdout


@pytest.mark.smoke
def test_workflow_is_hardened(ci_template: Path, tmp_path: Path) -> None:
    # Every combination renders the same hardening lines; the fullest one has them all.
    fullest = max(full_matrix(), key=lambda combo: len(combo.services()))
    project = render_ci(ci_template, tmp_path / "service", fullest.data())
    text = (project / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    workflow = load_workflow(project)
    assert workflow["permissions"] == {"contents": "read"}
    assert "group" in workflow["concurrency"]
    for name, job in workflow["jobs"].items():
        assert "permissions" not in job, name
        assert 0 < job["timeout-minutes"] <= 30, name
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name
    uses = [line for line in text.splitlines() if "uses:" in line]
    assert uses
    assert all(PINNED_USE.match(line) for line in uses), uses


@pytest.mark.smoke
def test_release_check_uses_the_copier_keel_pins(ci_template: Path, tmp_path: Path) -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    pinned = next(package["version"] for package in lock["package"] if package["name"] == "copier")
    project = render_ci(ci_template, tmp_path / "service", full_matrix()[0].data())
    assert f"uvx --from copier=={pinned} copier check-update" in release_check_script(project)


@pytest.mark.smoke
def test_renovate_enables_the_copier_manager_with_trust(ci_template: Path, tmp_path: Path) -> None:
    project = render_ci(ci_template, tmp_path / "service", full_matrix()[0].data())
    config = json.loads((project / "renovate.json").read_text(encoding="utf-8"))
    assert config["copier"] == {"enabled": True, "ignoreScripts": False}
    said = " ".join(config["description"])
    assert "allowScripts: true" in said and "self-hosted" in said and "--trust" in said
    hooks = yaml.safe_load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    (repo,) = hooks["repos"]
    assert repo["repo"] == "local"
    assert {hook["language"] for hook in repo["hooks"]} == {"system"}
    assert all(hook["entry"].startswith("uv run ") for hook in repo["hooks"])


def release_check_script(project: Path) -> str:
    steps = load_workflow(project)["jobs"]["keel-release"]["steps"]
    (script,) = [step["run"] for step in steps if "run" in step]
    return str(script)


@pytest.mark.slow
def test_pre_commit_runs_the_projects_own_tools_offline(
    render: Any,
    tmp_path: Path,
    mypy_cache: Path,  # noqa: F811 (the fixture, imported from test_generated)
) -> None:
    by_id = {combo.id: combo for combo in full_matrix()}
    project = render(by_id["sqlite-memory-none-none"].data())
    run(project, "sync", "--python", "3.11")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    environment = {
        **project_environment(),
        # Nothing to download: the hooks use what `uv sync` installed, and pre-commit installs
        # no environment of its own for local hooks.
        "UV_OFFLINE": "1",
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "MYPY_CACHE_DIR": str(mypy_cache),
        "PATH": f"{Path(uv_command()[0]).parent}{os.pathsep}{os.environ['PATH']}",
    }

    def pre_commit(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "run", "--all-files"],
            cwd=project,
            env={**environment, **extra},
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    clean = pre_commit()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "ruff check" in clean.stdout and "mypy" in clean.stdout

    (project / "src" / "scratch.py").write_text("import os\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    dirty = pre_commit(SKIP="mypy")
    assert dirty.returncode != 0
    assert re.search(r"ruff check\.+Failed", dirty.stdout), dirty.stdout


@pytest.mark.slow
def test_release_check_reports_a_newer_release(
    template_repo: Path,  # noqa: F811 (the fixture, imported from test_update)
    ci_template: Path,
    tmp_path: Path,
) -> None:
    """The keel-release job's script, run as GitHub runs it, in services made from the first and
    the newest tagged release, with `uvx --from copier==...` standing for keel's own copier."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (Debian: apt-get install jq); GitHub's runners have it")
    script = release_check_script(render_ci(ci_template, tmp_path / "ci", full_matrix()[0].data()))
    stand_in = tmp_path / "bin" / "uvx"
    stand_in.parent.mkdir()
    stand_in.write_text(
        f'#!/bin/sh\n[ "$1" = --from ] || exit 64\nshift 2\nexec "{VENV_BIN / "copier"}" "$@"\n'
    )
    stand_in.chmod(0o755)

    def check(release: str, event: str) -> subprocess.CompletedProcess[str]:
        project = tmp_path / f"service-{release}"
        if not project.exists():
            render_release(template_repo, project, release)
            git(project, "init", "-q")
            commit_all(project, f"Rendered from keel {release}")
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=project,
            env={
                **os.environ,
                "PATH": f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}",
                "GITHUB_EVENT_NAME": event,
                "GITHUB_STEP_SUMMARY": str(tmp_path / f"summary-{release}-{event}"),
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    first, newest = RELEASES[0]["version"], RELEASES[-1]["version"]
    on_push = check(first, "push")
    assert on_push.returncode == 0, on_push.stdout + on_push.stderr
    assert f"::warning title=keel {newest} is out::" in on_push.stdout
    assert f"this service is on {first}" in (tmp_path / f"summary-{first}-push").read_text()
    scheduled = check(first, "schedule")
    assert scheduled.returncode == 1, scheduled.stdout + scheduled.stderr

    current = check(newest, "schedule")
    assert current.returncode == 0, current.stdout + current.stderr
    assert f"On keel {newest}, the newest release." in current.stdout
