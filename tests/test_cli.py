"""The command line, run as a user would: a subprocess."""

from __future__ import annotations

import subprocess
import sys

import minibert


def run(*args):
    return subprocess.run([sys.executable, "-m", "minibert", *args], capture_output=True, text=True, timeout=120)


def test_version():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"minibert {minibert.__version__}"


def test_help():
    result = run("--help")
    assert result.returncode == 0 and "usage: minibert" in result.stdout


def test_import_is_light():
    code = "import sys, minibert; print('torch' in sys.modules, 'tokenizers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"]
