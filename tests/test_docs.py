"""The documentation site builds strict, and its generated pages match copier.yml and the budget."""

from __future__ import annotations

import html
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "docs" / "hooks" / "generated.py"


def load_hook() -> ModuleType:
    """Import the docs hook by path, for its example inputs and its budget module."""
    spec = importlib.util.spec_from_file_location("keel_docs_hook", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built with `mkdocs build --strict`."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def test_questions_page_lists_every_question(site: Path) -> None:
    """Every question in copier.yml has a row, and no marker is left unreplaced."""
    page = (site / "questions" / "index.html").read_text(encoding="utf-8")
    questions = yaml.safe_load((ROOT / "copier.yml").read_text(encoding="utf-8"))
    names = [name for name in questions if not name.startswith("_")]
    assert names
    missing = [name for name in names if f"<td><code>{name}</code></td>" not in page]
    assert not missing


def test_budget_page_shows_computed_numbers(site: Path) -> None:
    """The worked example and the refusal are the real compute_budget's results."""
    page = (site / "connection-budget" / "index.html").read_text(encoding="utf-8")
    hook = load_hook()
    budget_module = hook.budget_module()
    budget = budget_module.compute_budget(**hook.EXAMPLE)
    rows = {
        "processes P": budget.processes,
        "available": budget.available,
        "<code>pool_size</code> K": budget.pool_size,
        "total at peak": budget.processes * budget.pool_size,
    }
    for label, value in rows.items():
        assert f"<td>{label}</td>\n<td>{value}</td>" in page, label
    assert html.escape(budget.describe(), quote=False) in page
    default_peak = budget.processes * hook.SQLALCHEMY_DEFAULT_PER_PROCESS
    assert default_peak > hook.EXAMPLE["max_connections"]
    assert f"<strong>{default_peak}</strong>" in page

    with pytest.raises(budget_module.BudgetError) as refused:
        budget_module.compute_budget(**hook.REFUSED)
    assert html.escape(str(refused.value), quote=False) in page


def test_generated_sections_are_committed_up_to_date() -> None:
    """Each page reads in the repository as on the site: its generated sections are current."""
    hook = load_hook()
    pages = sorted((ROOT / "docs").rglob("*.md"))
    with_sections = [page for page in pages if hook.SECTION.search(page.read_text("utf-8"))]
    assert len(with_sections) >= 3
    stale = [
        page.relative_to(ROOT).as_posix()
        for page in with_sections
        if hook.fill(page.read_text("utf-8")) != page.read_text("utf-8")
    ]
    assert not stale, f"generated sections out of date in {stale}: run `make docs`"
