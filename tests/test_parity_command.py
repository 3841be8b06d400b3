"""`minibert parity`: minibert against transformers on any checkpoint, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "data" / "uncased_L-2_H-32_A-4"


def parity(*args):
    return subprocess.run([sys.executable, "-m", "minibert", "parity", *args], capture_output=True, timeout=600)


def test_parity_on_minilm():
    result = parity("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["first_failure"] is None
    rows = report["rows"]
    assert list(rows)[:2] == ["embeddings", "layer 0"] and "attentions 5" in rows and "pooler" in rows
    assert all(row["eager"] == 0 for row in rows.values())  # the explicit path is the reference's arithmetic
    assert 0 < max(row["sdpa"] or 0 for row in rows.values()) <= 1e-5


def test_parity_on_a_tensorflow_checkpoint_with_heads_and_in_bfloat16():
    result = parity("--model", str(FIXTURE), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert rows["mlm logits"]["eager"] <= 1e-5 and rows["nsp logits"]["eager"] <= 1e-5
    half = parity("--model", str(FIXTURE), "--dtype", "bfloat16")
    assert half.returncode == 0, half.stdout.decode() + half.stderr.decode()
    assert b"within 1.5 x the reference's own" in half.stdout and b"reference" in half.stdout.splitlines()[2]


def test_parity_beyond_tolerance_exits_1():
    result = parity("--atol", "0")  # the fused path differs from the reference by rounding
    assert result.returncode == 1
    assert b"first output beyond tolerance (max abs diff <= 0): layer 0" in result.stdout


def test_parity_without_transformers_says_how_to_get_it():
    code = "import sys; sys.modules['transformers'] = None; from minibert.cli import main; sys.exit(main(['parity']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        "minibert parity: error: minibert parity compares against Hugging Face "
        "transformers, which is not installed: pip install transformers"
    )
