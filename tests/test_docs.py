"""The documentation stays true: generated tables are fresh, links lead somewhere, the README stays a guide."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def test_the_readme_tables_match_the_files_they_describe() -> None:
    tables = runpy.run_path(str(ROOT / "docs" / "tables.py"))
    text = (ROOT / "README.md").read_text()
    assert tables["render"](text) == text, "README.md is stale: run python docs/tables.py"


def test_the_readme_is_a_user_guide_not_a_manual() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 16 * 1024, f"README.md is {size} bytes: move detail to docs/ (design.md, errors.md, recipes.md)"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_leads_to_a_file_of_the_repository(page: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    missing = [t for t in targets if "://" not in t and not (page.parent / t).exists()]
    assert missing == [], missing
