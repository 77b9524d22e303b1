"""Run by `copier update` before it applies a release: keep the user's edits to removed files.

copier update deletes a file the new release no longer renders, whether or not the user edited
it, and says nothing. For every file a release removed, `upgrades/<version>/` holds the file as
keel last rendered it, with `{{ package_name }}` where the package name goes, at its path under
`src/<package>/`. Before every update this script copies such a file in the service beside
itself, as `<name>.pre-<version>`, when all of these hold:

- the release being applied does not render it (it is not under the template's `template/`);
- the service's release rendered it (it is in the tree of the `_commit` that .copier-answers.yml
  records; when the template's clone does not have that commit, assume it did);
- it differs from the file as keel last rendered it: the difference is the user's work.

copier runs it on every update, with no `version` in `_migrations`, because copier's versions
come from git tags and a clone of keel may have none: the files alone decide. Running it again
changes nothing. A copy that already holds the file is left as it is; a copy that holds anything
else is never overwritten: the script then copies nothing, says which file to move, and exits 1,
which stops the update before it touches the service.

Usage, in the service's directory: python keep_edited_files.py <template directory>
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml  # copier's own dependencies, so its interpreter, which runs this, has them
from packaging.version import Version

PLACEHOLDER = "{{ package_name }}"
SUBDIRECTORY = "template"  # copier.yml's _subdirectory
JINJA_TAG = re.compile(r"\{%.*?%\}")


def rendered_name(template_path: str) -> str:
    """The path a template file renders to when the answers keep it, package name unrendered."""
    return JINJA_TAG.sub("", template_path).removesuffix(".jinja")


def renders_now(template: Path) -> set[str]:
    """Every path the template directory renders, for some answers."""
    root = template / SUBDIRECTORY
    return {
        rendered_name(path.relative_to(root).as_posix())
        for path in root.rglob("*")
        if path.is_file()
    }


def rendered_at(template: Path, commit: str | None) -> set[str] | None:
    """Every path the template rendered at commit, for some answers; None when it is unknown."""
    if not commit or commit.startswith("-"):
        return None
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "-z", "--name-only", commit, "--", f"{SUBDIRECTORY}/"],
        cwd=template,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        return None
    prefix = f"{SUBDIRECTORY}/"
    return {rendered_name(name.removeprefix(prefix)) for name in listed.stdout.split("\0") if name}


def removed_files(upgrades: Path) -> dict[str, tuple[str, Path]]:
    """Each file a release removed: the newest release that removed it, and keel's last copy."""
    releases = sorted(
        (path for path in upgrades.iterdir() if path.is_dir()), key=lambda path: Version(path.name)
    )
    removed = {}
    for release in releases:
        for shipped in sorted(path for path in release.rglob("*") if path.is_file()):
            name = f"src/{PLACEHOLDER}/{shipped.relative_to(release).as_posix()}"
            removed[name] = (release.name, shipped)
    return removed


def copies_to_make(
    template: Path, service: Path, answers: dict[str, str]
) -> list[tuple[Path, Path]]:
    """(edited file, its copy) for every removed file the user changed; SystemExit on a clash."""
    package_name = answers["package_name"]
    renders = renders_now(template)
    rendered = rendered_at(template, answers.get("_commit"))
    copies, clashes = [], []
    for name, (version, shipped) in removed_files(template / "upgrades").items():
        if name in renders or (rendered is not None and name not in rendered):
            continue  # copier merges the file, or leaves alone a file of the user's own
        current = service / name.replace(PLACEHOLDER, package_name)
        if not current.is_file():
            continue
        expected = shipped.read_bytes().replace(PLACEHOLDER.encode(), package_name.encode())
        if current.read_bytes() == expected:
            continue  # as keel rendered it: nothing of the user's to keep
        copy = current.with_name(f"{current.name}.pre-{version}")
        if copy.exists() and copy.read_bytes() != current.read_bytes():
            clashes.append(copy)
        copies.append((current, copy))
    if clashes:
        sys.exit(
            "\n".join(
                f"keel: {copy.relative_to(service)} exists and is not your current"
                f" {copy.name.rsplit('.pre-', 1)[0]}, which this update removes: move the copy"
                " away and run copier update again"
                for copy in clashes
            )
        )
    return copies


def main() -> None:
    template = Path(sys.argv[1])
    service = Path.cwd()
    # Read here: copier renders a migration's command before it has loaded the answers.
    answers = yaml.safe_load((service / ".copier-answers.yml").read_text(encoding="utf-8"))
    for current, copy in copies_to_make(template, service, answers):
        if not copy.exists():
            shutil.copy2(current, copy)
        version = copy.name.rsplit(".pre-", 1)[1]
        print(
            f"keel {version} removes {current.relative_to(service)}, which you edited: your"
            f" version is kept as {copy.relative_to(service)}. See CHANGELOG.md for where its"
            " code went.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
