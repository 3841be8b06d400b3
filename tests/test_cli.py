"""The command line, run as a user would: a subprocess, checked against the Python API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import minibert

TEXTS = ["A man is eating food.", "A man eats a meal.", "春眠不觉晓"]


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "minibert", *args], capture_output=True, timeout=300,
                          input=stdin.encode() if isinstance(stdin, str) else stdin)


@pytest.fixture(scope="module")
def expected(minilm_dir):
    return minibert.Encoder.from_pretrained(minilm_dir).encode(TEXTS)


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_version_and_help():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.decode().strip() == f"minibert {minibert.__version__}"
    for args in (["--help"], ["embed", "--help"], ["similarity", "--help"], ["tokenize", "--help"]):
        result = run(*args)
        assert result.returncode == 0 and b"usage: minibert" in result.stdout
    assert b"examples:" in run("embed", "--help").stdout


def test_import_is_light():
    code = "import sys, minibert; print('torch' in sys.modules, 'tokenizers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"]


def test_similarity_table(expected):
    result = run("similarity", *TEXTS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["[1]", "[2]", "[3]"]
    matrix = expected @ expected.T
    for i, line in enumerate(lines[1:]):
        assert line.startswith(f"[{i + 1}] {TEXTS[i]}")
        assert [float(x) for x in line.split()[-3:]] == [round(float(x), 2) for x in matrix[i]]
    # CJK labels take two columns each, so every row is as wide on screen as the header
    from minibert.cli import display_width

    assert {display_width(line) for line in lines} == {display_width(lines[0])}
    assert len(lines[3]) < len(lines[1])  # fewer characters, same width


def test_embed_npy(input_file, tmp_path, expected):
    out = tmp_path / "v.npy"
    result = run("embed", str(input_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6, rtol=0)


def test_embed_jsonl_from_stdin(expected):
    result = run("embed", "--format", "jsonl", "-", stdin="\n".join(TEXTS))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-6, rtol=0)


def test_embed_tsv_with_options(input_file, minilm_dir):
    result = run("embed", "--format", "tsv", "--pooling", "cls", "--no-normalize", "--batch-size", "2",
                 "--max-length", "6", str(input_file))
    assert result.returncode == 0, result.stderr
    got = np.array([[float(x) for x in line.split("\t")] for line in result.stdout.decode().splitlines()])
    encoder = minibert.Encoder.from_pretrained(minilm_dir)
    with pytest.warns(UserWarning, match="3 of 3 texts were longer than 6 tokens"):
        want = encoder.encode(TEXTS, pooling="cls", normalize=False, max_length=6, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_embed_int8(input_file, expected):
    from minibert.quantize import int8_available

    if not int8_available():
        pytest.skip("this torch build has no oneDNN int8 kernel")
    result = run("embed", "--quantize", "int8", "--format", "jsonl", str(input_file))
    assert result.returncode == 0, result.stderr
    got = np.array([json.loads(line)["embedding"] for line in result.stdout.decode().splitlines()])
    assert got.shape == expected.shape
    assert ((got * expected).sum(1) > 0.97).all()  # lossy, but the same vectors to within int8
    result = run("embed", "--quantize", "int8", "--device", "meta", "--format", "tsv", str(input_file))
    assert result.returncode == 2 and b"runs on CPU in float32" in result.stderr


def test_tokenize():
    result = run("tokenize", "Unaffable!", "春眠")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.decode().splitlines()[1:]]
    assert [r[1] for r in rows] == ["[CLS]", "una", "##ffa", "##ble", "!", "[SEP]", "春", "[UNK]", "[SEP]"]
    assert [r[2] for r in rows][:2] == ["101", "14477"] and [r[3] for r in rows] == ["0"] * 6 + ["1"] * 3


@pytest.mark.parametrize("args,stdin,message", [
    (["embed", "/no/such/file.txt", "-o", "x.npy"], None, "cannot read /no/such/file.txt"),
    (["embed", "-o", "x.npy"], b"", "stdin is empty"),
    (["embed", "-o", "x.npy"], b"caf\xe9\n", "stdin is not UTF-8 text"),
    (["embed", "--pooling", "average", "-o", "x.npy"], b"hi\n", "unknown pooling 'average'"),
    (["embed", "--batch-size", "0", "-o", "x.npy"], b"hi\n", "--batch-size must be positive"),
    (["embed", "--model", "/no/such/model", "-o", "x.npy"], b"hi\n", "model folder not found: /no/such/model"),
    (["similarity", "--model", "/no/such/model", "a", "b"], None, "model folder not found"),
    (["tokenize", "--model", "/no/such/model", "a"], None, "model folder not found"),
    (["embed", "--format", "xml"], b"hi\n", "invalid choice: 'xml'"),
])
def test_errors_exit_2_with_one_line(tmp_path, args, stdin, message):
    result = subprocess.run([sys.executable, "-m", "minibert", *args], capture_output=True, timeout=120,
                            input=stdin, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.npy").exists()


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("minibert")
    assert exe is not None, "pip install -e . puts a minibert command on PATH"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"minibert {minibert.__version__}"


def test_truncation_warning_is_one_line():
    result = run("embed", "--format", "tsv", "--max-length", "4", stdin="one two three four five\nshort\n")
    assert result.returncode == 0
    expected = "minibert: warning: 1 of 2 texts were longer than 4 tokens and were truncated"
    assert result.stderr.decode().strip() == expected
