"""`copier update` from the first and the previous release to HEAD, and a changed answer.

Releases come from releases.toml. The tests clone the repository into a temporary directory,
lay the working tree over it (so uncommitted changes are what is tested, as everywhere else) and
tag the release commits there, so they do not depend on tags having been pushed.

A service rendered from a release gets a typical user edit. `copier update` then takes it to
HEAD with no conflict, its tests pass, and the result is a fresh render of HEAD plus that edit.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from matrix import ROOT
from test_generated import PYTHON, run

pytestmark = pytest.mark.slow

RELEASES = tomllib.loads((ROOT / "releases.toml").read_text(encoding="utf-8"))["release"]
NEXT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "version"
]
# What the user answered: a PostgreSQL service with the in-memory cache, as 0.1.0 could render.
ANSWERS = {
    "project_name": "Orders API",
    "author_name": "Platform Team",
    "author_email": "platform@example.com",
    "database": "postgresql",
    "cache": "memory",
}
# Files copier writes about the render itself, not part of the service.
BOOKKEEPING = {".copier-answers.yml"}
# The user's edit: a longer request timeout, in a file every release renders.
EDITED_FILE = Path("src/orders_api/settings.py")
ORIGINAL_LINE = "request_timeout_seconds: int = Field(default=30, ge=1, le=600)"
EDITED_LINE = "request_timeout_seconds: int = Field(default=60, ge=1, le=600)"


def git(directory: Path, *arguments: str) -> str:
    completed = subprocess.run(
        ["git", *arguments], cwd=directory, capture_output=True, text=True, check=True
    )
    return completed.stdout


def commit_all(directory: Path, message: str) -> None:
    git(directory, "add", "-A")
    git(
        directory,
        "-c",
        "user.name=keel tests",
        "-c",
        "user.email=tests@keel.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        message,
    )


@pytest.fixture(scope="module")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of keel with the working tree laid over it and every release tagged."""
    clone = tmp_path_factory.mktemp("keel") / "keel"
    git(ROOT, "clone", "-q", "--no-local", str(ROOT), str(clone))
    tracked_and_new = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, tracked_and_new.split("\0")):
        source = ROOT / name
        target = clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()  # deleted in the working tree
    commit_all(clone, "The working tree under test")
    for release in RELEASES:
        git(clone, "tag", release["version"], release["commit"])
    # The version being made, so that its _migrations run as they will once it is released.
    git(clone, "tag", NEXT_VERSION)
    return clone


def render(template: Path, destination: Path, vcs_ref: str, **data: Any) -> Path:
    copier.run_copy(
        str(template),
        str(destination),
        data={**ANSWERS, "python_version": PYTHON, **data},
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref=vcs_ref,
    )
    return destination


def update(project: Path, **data: Any) -> None:
    copier.run_update(
        str(project),
        data=data,
        defaults=True,
        unsafe=True,
        quiet=True,
        overwrite=True,
        vcs_ref="HEAD",
        conflict="inline",
    )


def files_of(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and ".git" not in relative.parts and str(relative) not in BOOKKEEPING:
            yield relative


def differences(project: Path, fresh: Path) -> list[str]:
    """Every file that is missing, extra or different in project, compared with fresh."""
    ours, theirs = set(files_of(project)), set(files_of(fresh))
    found = [f"only in the updated service: {name}" for name in sorted(ours - theirs)]
    found += [f"missing from the updated service: {name}" for name in sorted(theirs - ours)]
    found += [
        f"differs: {name}"
        for name in sorted(ours & theirs)
        if not filecmp.cmp(project / name, fresh / name, shallow=False)
    ]
    return found


def recorded_answers(project: Path) -> dict[str, Any]:
    answers: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return {name: value for name, value in answers.items() if not name.startswith("_")}


# The first and the previous release; one test while they are the same.
UPDATED_FROM = {"from-first-release": RELEASES[0], "from-previous-release": RELEASES[-1]}
if RELEASES[0] is RELEASES[-1]:
    UPDATED_FROM = {"from-first-and-previous-release": RELEASES[0]}


@pytest.mark.parametrize("release", UPDATED_FROM.values(), ids=UPDATED_FROM.keys())
def test_update_to_head_keeps_the_users_edit(
    template_repo: Path, tmp_path: Path, release: dict[str, str]
) -> None:
    project = render(template_repo, tmp_path / "orders-api", release["version"])
    git(project, "init", "-q")
    commit_all(project, f"Rendered from keel {release['version']}")
    settings = project / EDITED_FILE
    assert ORIGINAL_LINE in settings.read_text()
    settings.write_text(settings.read_text().replace(ORIGINAL_LINE, EDITED_LINE))
    commit_all(project, "A longer request timeout")

    update(project)

    conflicted = [
        str(name)
        for name in files_of(project)
        if name.suffix == ".rej" or "<<<<<<< " in (project / name).read_text(errors="replace")
    ]
    assert conflicted == []
    fresh = render(template_repo, tmp_path / "fresh", "HEAD", **recorded_answers(project))
    # Apart from the edited file, the update is exactly a fresh render of HEAD...
    assert differences(project, fresh) == [f"differs: {EDITED_FILE}"]
    # ...and the edited file is the fresh one with the user's line.
    expected = (fresh / EDITED_FILE).read_text().replace(ORIGINAL_LINE, EDITED_LINE)
    assert settings.read_text() == expected
    run(project, "sync", "--python", PYTHON)
    run(project, "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider")


@pytest.mark.parametrize(
    ("before", "after"),
    [({"cache": "memory"}, {"cache": "redis"}), ({"cache": "redis"}, {"cache": "none"})],
    ids=["memory-to-redis", "redis-to-none"],
)
def test_changing_an_answer_on_update_leaves_no_orphan_files(
    template_repo: Path, tmp_path: Path, before: dict[str, str], after: dict[str, str]
) -> None:
    project = render(template_repo, tmp_path / "orders-api", "HEAD", **before)
    git(project, "init", "-q")
    commit_all(project, "Rendered")

    update(project, **after)

    fresh = render(template_repo, tmp_path / "fresh", "HEAD", **after)
    assert recorded_answers(project) == recorded_answers(fresh)
    assert differences(project, fresh) == []


def test_an_edited_file_the_release_removes_is_kept_aside(
    template_repo: Path, tmp_path: Path
) -> None:
    # 0.2.0 merged the request-id, timing and metrics middlewares into one module: update from
    # 0.1.0, the last release that had them.
    [release] = [release for release in RELEASES if release["version"] == "0.1.0"]
    project = render(template_repo, tmp_path / "orders-api", release["version"])
    git(project, "init", "-q")
    commit_all(project, f"Rendered from keel {release['version']}")
    timing = project / "src/orders_api/middleware/timing.py"
    edited = timing.read_text() + "# Our own tweak.\n"
    timing.write_text(edited)
    commit_all(project, "A tweak to the timing middleware")

    update(project)

    assert not timing.exists()
    kept = timing.with_name("timing.py.pre-0.2.0")
    assert kept.read_text() == edited
    # The unedited ones were removed without a copy.
    assert list((project / "src/orders_api/middleware").glob("*.pre-*")) == [kept]
