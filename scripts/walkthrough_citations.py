"""Renumber docs/walkthrough.md's `model.py:N  code` and `relatives.py:N  code` citations after the files
have changed: each citation's code is looked up in its file, and the number is set to the line holding it
(the nearest to the old number where the same code stands on several lines). tests/test_walkthrough.py checks that every
citation points at its code.

    python scripts/walkthrough_citations.py          # rewrites docs/walkthrough.md, lists what moved
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from minibert.formats.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"^(model|relatives)\.py:(\d+)(\s+)(.*)$")


def renumber(doc: list[str], sources: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The document with every citation's number corrected, and a note for each one changed. `sources`:
    file stem -> its lines."""
    out, notes = [], []
    for line in doc:
        m = CITATION.match(line)
        if not m:
            out.append(line)
            continue
        name, old, gap, code = m.group(1), int(m.group(2)), m.group(3), m.group(4).strip()
        found = [i + 1 for i, s in enumerate(sources[name]) if s.strip() == code]
        if not found:
            raise SystemExit(f"docs/walkthrough.md cites {code!r}, which is no longer a line of {name}.py")
        new = min(found, key=lambda n: abs(n - old))
        if new != old:
            notes.append(f"{name}.py:{old} -> {new}  {code[:60]}")
        out.append(f"{name}.py:{new}{gap}{m.group(4)}")
    return out, notes


def main() -> None:
    doc_path = ROOT / "docs" / "walkthrough.md"
    sources = {
        name: (ROOT / "minibert" / f"{name}.py").read_text(encoding="utf-8").splitlines()
        for name in ("model", "relatives")
    }
    text = doc_path.read_text(encoding="utf-8")
    lines, notes = renumber(text.splitlines(), sources)
    write_text(doc_path, "\n".join(lines) + ("\n" if text.endswith("\n") else ""))
    print("\n".join(notes) or "every citation already points at its code", file=sys.stderr)


if __name__ == "__main__":
    main()
