"""docs/walkthrough.md cites model.py by line number with the code found there: every citation must still
point at that code, so the walkthrough cannot silently drift from the model."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
CITATION = re.compile(r"^(model|relatives)\.py:(\d+)\s+(.*)$")


def test_every_citation_points_at_its_code():
    doc = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8").splitlines()
    citations = [CITATION.match(line).groups() for line in doc if CITATION.match(line)]
    assert len(citations) >= 20 and any(name == "relatives" for name, _, _ in citations)
    for name, number, code in citations:
        source = (ROOT / "minibert" / f"{name}.py").read_text(encoding="utf-8").splitlines()
        line = int(number)
        assert 1 <= line <= len(source), f"{name}.py:{line} is past the end of the file"
        assert source[line - 1].strip() == code.strip(), f"{name}.py:{line} is now {source[line - 1].strip()!r}"


def test_the_figure_exists():
    doc = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc):
        assert (ROOT / "docs" / image).is_file(), image
