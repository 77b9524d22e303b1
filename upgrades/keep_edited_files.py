"""Run by `copier update` before it applies a release: keep the user's edits to removed files.

copier update deletes a file the new release no longer renders, whether or not the user edited
it, and says nothing. For every file a release removed, `upgrades/<version>/` holds the file as
keel last rendered it, with `{{ package_name }}` where the package name goes. A file in the
service that differs from that is the user's work: it is copied beside itself as
`<name>.pre-<version>` before copier deletes the original, and the user is told where it went.

Usage, in the service's directory: python keep_edited_files.py <upgrades/version directory>
"""

import shutil
import sys
from pathlib import Path

import yaml  # copier's own dependency, so its interpreter, which runs this, has it

PLACEHOLDER = "{{ package_name }}"


def keep_edited_files(removed: Path, package_name: str, service: Path) -> list[Path]:
    """Copy aside every removed file the user changed; the copies made."""
    version = removed.name
    kept = []
    for shipped in sorted(path for path in removed.rglob("*") if path.is_file()):
        relative = shipped.relative_to(removed)
        current = service / "src" / package_name / relative
        if not current.is_file():
            continue
        expected = shipped.read_text(encoding="utf-8").replace(PLACEHOLDER, package_name)
        if current.read_text(encoding="utf-8") == expected:
            continue  # as keel rendered it: nothing of the user's to keep
        copy = current.with_name(f"{current.name}.pre-{version}")
        shutil.copy2(current, copy)
        kept.append(copy)
    return kept


def main() -> None:
    removed = Path(sys.argv[1])
    # Read here: copier renders a migration's command before it has loaded the answers.
    answers = yaml.safe_load(Path(".copier-answers.yml").read_text(encoding="utf-8"))
    package_name = answers["package_name"]
    for copy in keep_edited_files(removed, package_name, Path.cwd()):
        original = copy.name.rsplit(".pre-", 1)[0]
        print(
            f"keel {removed.name} removes {original}, which you edited: your version is kept as"
            f" {copy.relative_to(Path.cwd())}. See CHANGELOG.md for where its code went.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
