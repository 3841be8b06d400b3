"""docs/walkthrough.md cites model.py by line number with the code found there: every citation must still
point at that code, so the walkthrough cannot silently drift from the model."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
CITATION = re.compile(r"^model\.py:(\d+)\s+(.*)$")


def test_every_citation_points_at_its_code():
    doc = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8").splitlines()
    source = (ROOT / "minibert" / "model.py").read_text(encoding="utf-8").splitlines()
    citations = [CITATION.match(line).groups() for line in doc if CITATION.match(line)]
    assert len(citations) >= 20
    for number, code in citations:
        line = int(number)
        assert 1 <= line <= len(source), f"model.py:{line} is past the end of the file"
        assert source[line - 1].strip() == code.strip(), f"model.py:{line} is now {source[line - 1].strip()!r}"


def test_the_figure_exists():
    doc = (ROOT / "docs" / "walkthrough.md").read_text(encoding="utf-8")
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc):
        assert (ROOT / "docs" / image).is_file(), image
