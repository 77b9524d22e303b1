"""`copier update` from the first and the previous release to HEAD, and a changed answer.

Releases come from releases.toml. The tests clone the repository into a temporary directory and
lay the working tree over it, so uncommitted changes are what is tested, as everywhere else.
keel's repository has no tags, and neither has that clone: one path tags the release commits
with scripts/tag-releases, as a user would, and one updates without tags at all.

A service rendered from a release gets a typical user edit. `copier update` then takes it to
HEAD with no conflict, its tests pass, and the result is a fresh render of HEAD plus that edit.
docs/upgrading.md's commands run as written, in order, on a service rendered from 0.1.0.
"""

from __future__ import annotations

import filecmp
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import copier
import pexpect
import pytest
import yaml
from matrix import ROOT
from test_generated import PYTHON, run

pytestmark = pytest.mark.slow

RELEASES = tomllib.loads((ROOT / "releases.toml").read_text(encoding="utf-8"))["release"]
RELEASE_COMMITS = {release["version"]: release["commit"] for release in RELEASES}
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
def untagged_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of keel with the working tree laid over it, and no tags."""
    clone = tmp_path_factory.mktemp("keel-untagged") / "keel"
    git(ROOT, "clone", "-q", "--no-local", "--no-tags", str(ROOT), str(clone))
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
    assert git(clone, "tag") == ""
    return clone


def local_clone(repository: Path, destination: Path) -> Path:
    """A clone of repository, for a test that adds tags or renders from it."""
    git(repository, "clone", "-q", str(repository), str(destination))
    return destination


def tag_releases(clone: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the clone's scripts/tag-releases, as a user would from a shell."""
    return subprocess.run(
        [str(clone / "scripts" / "tag-releases"), *arguments],
        cwd=clone,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def template_repo(untagged_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untagged clone's clone, with every release tagged by scripts/tag-releases."""
    clone = local_clone(untagged_repo, tmp_path_factory.mktemp("keel-tagged") / "keel")
    tagged = tag_releases(clone)
    assert tagged.returncode == 0, tagged.stderr
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


def copier_command(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the copier command in project as a script would: no terminal, nothing on stdin."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "copier"), *arguments],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def files_of(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        # Bytecode caches are Python's, and gitignored: 0.1.0 and 0.2.0 import budget.py from their
        # template at render time, and copier copies the cache that import writes.
        if "__pycache__" in relative.parts:
            continue
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
    # A fresh render plus the edit (above): its slow tests run in the matrix (heavy_matrix).
    run(project, "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow")


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


def render_with_edited_timing(template: Path, project: Path, vcs_ref: str) -> str:
    """A service from vcs_ref with the user's tweak to middleware/timing.py, committed."""
    render(template, project, vcs_ref)
    git(project, "init", "-q")
    commit_all(project, f"Rendered from keel {vcs_ref}")
    timing = project / "src/orders_api/middleware/timing.py"
    edited = timing.read_text() + "# Our own tweak.\n"
    timing.write_text(edited)
    commit_all(project, "A tweak to the timing middleware")
    return edited


def test_an_edited_file_the_release_removes_is_kept_aside(
    template_repo: Path, tmp_path: Path
) -> None:
    # 0.2.0 merged the request-id, timing and metrics middlewares into one module: update from
    # 0.1.0, the last release that had them.
    project = tmp_path / "orders-api"
    edited = render_with_edited_timing(template_repo, project, "0.1.0")
    timing = project / "src/orders_api/middleware/timing.py"

    update(project)

    assert not timing.exists()
    kept = timing.with_name("timing.py.pre-0.2.0")
    assert kept.read_text() == edited
    # The unedited ones were removed without a copy.
    assert list((project / "src/orders_api/middleware").glob("*.pre-*")) == [kept]


def test_without_tags_an_update_keeps_the_edited_file_and_is_safe_to_repeat(
    untagged_repo: Path, tmp_path: Path
) -> None:
    # No tags: copier calls both ends 0.0.0.postN and would skip a migration with a version.
    project = tmp_path / "orders-api"
    edited = render_with_edited_timing(untagged_repo, project, RELEASE_COMMITS["0.1.0"])
    timing = project / "src/orders_api/middleware/timing.py"
    kept = timing.with_name("timing.py.pre-0.2.0")

    # As in CI or a script: no terminal, nothing on stdin, no --vcs-ref (no tags: HEAD).
    updated = copier_command(project, "update", "--trust", "--defaults")

    assert updated.returncode == 0, updated.stderr
    assert "your version is kept as src/orders_api/middleware/timing.py.pre-0.2.0" in (
        updated.stderr
    )
    head = git(untagged_repo, "describe", "--tags", "--always").strip()
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == head
    assert not timing.exists()
    assert kept.read_text() == edited
    fresh = render(untagged_repo, tmp_path / "fresh", "HEAD", **recorded_answers(project))
    assert differences(project, fresh) == [
        f"only in the updated service: {kept.relative_to(project)}"
    ]
    commit_all(project, "keel HEAD")

    # Later updates run the same migration: it keeps the copy and leaves alone a timing.py of
    # the user's own, which the service's release no longer renders.
    timing.write_text('"""Our own timing helpers."""\n')
    commit_all(project, "Our own timing module")
    again = copier_command(project, "update", "--trust", "--defaults")

    assert again.returncode == 0, again.stderr
    assert "kept as" not in again.stderr
    assert git(project, "status", "--porcelain") == ""
    assert timing.read_text() == '"""Our own timing helpers."""\n'
    assert kept.read_text() == edited


def test_a_kept_copy_is_never_overwritten(untagged_repo: Path, tmp_path: Path) -> None:
    project = tmp_path / "orders-api"
    edited = render_with_edited_timing(untagged_repo, project, RELEASE_COMMITS["0.1.0"])
    # Say, left over from an update that was undone with `git checkout .` before a new edit.
    kept = project / "src/orders_api/middleware/timing.py.pre-0.2.0"
    kept.write_text("# An older tweak.\n")
    commit_all(project, "An older copy")

    updated = copier_command(project, "update", "--trust", "--defaults")

    assert updated.returncode != 0
    assert (
        "keel: src/orders_api/middleware/timing.py.pre-0.2.0 exists and is not your current"
        " timing.py, which this update removes: move the copy away and run copier update again"
    ) in updated.stderr
    # The update stopped before it changed anything.
    assert git(project, "status", "--porcelain") == ""
    assert (project / "src/orders_api/middleware/timing.py").read_text() == edited
    assert kept.read_text() == "# An older tweak.\n"


def test_tag_releases_tags_each_release_once(untagged_repo: Path, tmp_path: Path) -> None:
    clone = local_clone(untagged_repo, tmp_path / "keel")

    dry_run = tag_releases(clone, "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert dry_run.stdout.splitlines() == [
        f"{version}: would tag {commit[:12]}" for version, commit in RELEASE_COMMITS.items()
    ]
    assert git(clone, "tag") == ""

    tagged = tag_releases(clone)
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.splitlines() == [
        f"{version}: tagged {commit[:12]}" for version, commit in RELEASE_COMMITS.items()
    ]
    for version, commit in RELEASE_COMMITS.items():
        assert git(clone, "rev-parse", f"refs/tags/{version}^{{commit}}").strip() == commit

    again = tag_releases(clone)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{version}: already tagged at {commit[:12]}" for version, commit in RELEASE_COMMITS.items()
    ]


def test_tag_releases_refuses_a_tag_at_another_commit(untagged_repo: Path, tmp_path: Path) -> None:
    clone = local_clone(untagged_repo, tmp_path / "keel")
    first = RELEASES[0]["version"]
    git(clone, "tag", first, "HEAD")
    head = git(clone, "rev-parse", "HEAD").strip()

    refused = tag_releases(clone)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"tag-releases: {first}: the tag exists at {head[:12]}, but releases.toml says"
        f" {RELEASE_COMMITS[first][:12]}; delete or move the tag yourself if releases.toml is right"
    )
    # Nothing was tagged, and the existing tag was not moved.
    assert git(clone, "tag").split() == [first]
    assert git(clone, "rev-parse", f"refs/tags/{first}^{{commit}}").strip() == head


UPGRADING = ROOT / "docs" / "upgrading.md"
SHELL_BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def run_block(block: str, project: Path, env: dict[str, str]) -> str:
    """Run one of the guide's shell blocks in project; its output; fail when it fails.

    A block with an interactive `copier update` (no --defaults) runs in a terminal, where Enter
    takes each question's default: the recorded answer. Any other block has no terminal and
    nothing on stdin, as in CI.
    """
    command = ["bash", "-euo", "pipefail", "-c", block]
    interactive = any(
        line.lstrip().startswith("copier update") and "--defaults" not in line
        for line in block.splitlines()
    )
    if not interactive:
        completed = subprocess.run(
            command,
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, f"{block}\nexited {completed.returncode}:\n{output}"
        return output
    transcript = io.StringIO()
    child = pexpect.spawn(
        command[0],
        command[1:],
        cwd=str(project),
        env=env,
        encoding="utf-8",
        dimensions=(40, 200),
        timeout=300,
    )
    child.logfile_read = transcript
    while child.expect(["\U0001f3a4", pexpect.EOF]) == 0:  # copier's prompt mark
        child.send("\r")
    child.close()
    output = transcript.getvalue()
    assert child.exitstatus == 0, f"{block}\nexited {child.exitstatus}:\n{output}"
    return output


def test_the_upgrading_guide_runs_as_written(untagged_repo: Path, tmp_path: Path) -> None:
    # The user's keel clone, untagged like keel's repository, and a service made from 0.1.0.
    clone = local_clone(untagged_repo, tmp_path / "keel")
    project = tmp_path / "orders-api"
    edited = render_with_edited_timing(clone, project, RELEASE_COMMITS["0.1.0"])
    blocks = SHELL_BLOCK.findall(UPGRADING.read_text(encoding="utf-8"))
    assert blocks
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "keel tests",
        "GIT_AUTHOR_EMAIL": "tests@keel.invalid",
        "GIT_COMMITTER_NAME": "keel tests",
        "GIT_COMMITTER_EMAIL": "tests@keel.invalid",
    }

    output = "".join(run_block(block, project, env) for block in blocks)

    # Every release is tagged in the clone the service came from...
    for version, commit in RELEASE_COMMITS.items():
        assert git(clone, "rev-parse", f"refs/tags/{version}^{{commit}}").strip() == commit
    # ...the service went to 0.2.0, committed, and its edit to a file 0.2.0 removes was kept...
    assert "your version is kept as src/orders_api/middleware/timing.py.pre-0.2.0" in output
    kept = project / "src/orders_api/middleware/timing.py.pre-0.2.0"
    assert kept.read_text() == edited
    assert git(project, "show", "HEAD:.copier-answers.yml").count("_commit: 0.2.0") == 1
    # ...and the last, non-interactive command changed an answer.
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == "0.2.0"
    assert answers["cache"] == "redis"
