"""Text for a terminal: control characters shown escaped, widths that count CJK characters as two columns
and combining marks as none, padding and clipping to those widths, and the labelled similarity table.
Shared by the commands that print what came from a user or a file (texts, wordpieces, tensor names)."""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates: printed raw, they reorder what the terminal shows after them.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` with control characters (an escape sequence's ESC, newlines, C1 controls) and bidirectional
    overrides written as Python escapes (\\x1b, \\n, \\u202e), so that a string from a file or a user
    cannot move the cursor, recolour the terminal or reorder a line; everything else as it is."""
    if text.isprintable() and not _BIDI.intersection(text):
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) == "Cc" or ch in _BIDI:
            out.append(ascii(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal columns: CJK and other wide characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def clip(text: str, width: int) -> str:
    """Cut to `width` columns, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out = ""
    for ch in text:
        if display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def format_matrix(labels: list[str], matrix, label_width: int = 40) -> str:
    """A labelled table, two decimals: row i is text i, column i is [i]."""
    rows = [f"[{i + 1}] {clip(printable(text), label_width)}" for i, text in enumerate(labels)]
    width = max(display_width(r) for r in rows)
    cells = [f"[{i + 1}]".rjust(6) for i in range(len(labels))]
    lines = [" " * width + "".join(cells)]
    for label, values in zip(rows, matrix):
        lines.append(pad(label, width) + "".join(f"{float(v):6.2f}" for v in values))
    return "\n".join(lines)
