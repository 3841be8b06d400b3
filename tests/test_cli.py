"""The command line, run as a user would: a subprocess, checked against the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minibert

TEXTS = ["A man is eating food.", "A man eats a meal.", "春眠不觉晓"]


def run(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "minibert", *args],
        capture_output=True,
        timeout=300,
        input=stdin.encode() if isinstance(stdin, str) else stdin,
    )


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
    from minibert.tools.terminal import display_width

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
    result = run(
        "embed",
        "--format",
        "tsv",
        "--pooling",
        "cls",
        "--no-normalize",
        "--batch-size",
        "2",
        "--max-length",
        "6",
        str(input_file),
    )
    assert result.returncode == 0, result.stderr
    got = np.array([[float(x) for x in line.split("\t")] for line in result.stdout.decode().splitlines()])
    encoder = minibert.Encoder.from_pretrained(minilm_dir)
    with pytest.warns(UserWarning, match="3 of 3 texts were longer than 6 tokens"):
        want = encoder.encode(TEXTS, pooling="cls", normalize=False, max_length=6, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_embed_int8(input_file, expected):
    from minibert.fast.quantize import int8_available

    if not int8_available():
        pytest.skip("this torch build has no oneDNN int8 kernel")
    result = run("embed", "--quantize", "int8", "--format", "jsonl", str(input_file))
    assert result.returncode == 0, result.stderr
    assert b"minibert: calibrating int8 on texts from the vocabulary" in result.stderr  # seconds of work: said
    got = np.array([json.loads(line)["embedding"] for line in result.stdout.decode().splitlines()])
    assert got.shape == expected.shape
    assert ((got * expected).sum(1) > 0.97).all()  # lossy, but the same vectors to within int8
    result = run("embed", "--quantize", "int8", "--device", "meta", "--format", "tsv", str(input_file))
    assert result.returncode == 2 and b"device 'meta' is not supported" in result.stderr


def test_tokenize_without_torch():
    code = "import sys, runpy; sys.argv = ['minibert', 'tokenize', 'Unaffable!']; "
    code += "runpy.run_module('minibert', run_name='__main__')"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0 and b"una" in done.stdout
    assert b"| torch\n" not in done.stderr  # the command's time is the tokenizer's, not torch's import


def test_tokenize():
    result = run("tokenize", "Unaffable!", "春眠")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.decode().splitlines()[1:]]
    assert [r[1] for r in rows] == ["[CLS]", "una", "##ffa", "##ble", "!", "[SEP]", "春", "[UNK]", "[SEP]"]
    assert [r[2] for r in rows][:2] == ["101", "14477"] and [r[3] for r in rows] == ["0"] * 6 + ["1"] * 3


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (["embed", "/no/such/file.txt", "-o", "x.npy"], None, "cannot read /no/such/file.txt"),
        (["embed", "-o", "x.npy"], b"", "stdin is empty"),
        (["embed", "-o", "x.npy"], b"caf\xe9\n", "stdin is not UTF-8 text"),
        (["embed", "--pooling", "average", "-o", "x.npy"], b"hi\n", "unknown pooling 'average'"),
        (["embed", "--batch-size", "0", "-o", "x.npy"], b"hi\n", "--batch-size must be positive"),
        (["embed", "--model", "/no/such/model", "-o", "x.npy"], b"hi\n", "model folder not found: /no/such/model"),
        (["similarity", "--model", "/no/such/model", "a", "b"], None, "model folder not found"),
        (["tokenize", "--model", "/no/such/model", "a"], None, "model folder not found"),
        (["embed", "--format", "xml"], b"hi\n", "invalid choice: 'xml'"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, args, stdin, message):
    result = subprocess.run(
        [sys.executable, "-m", "minibert", *args], capture_output=True, timeout=120, input=stdin, cwd=tmp_path
    )
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
    warning, summary = result.stderr.decode().strip().splitlines()
    assert warning == "minibert: warning: 1 of 2 texts were longer than 4 tokens and were truncated"
    assert summary.startswith("minibert: embedded 2 texts (384 dimensions, tsv) in ") and summary.endswith("-> stdout")


# --- faults a person meets at the command line ---------------------------------------------------------


def test_embed_splits_on_newlines_only(tmp_path, minilm_dir):
    texts = [
        "page\fbreak and\vvertical tab",
        "separators \x1c\x1d\x1e and next-line \u0085 inside",
        "line\u2028and paragraph\u2029separators",
    ]
    path = tmp_path / "texts.txt"
    path.write_bytes("\r\n".join(texts).encode("utf-8") + b"\r\n")  # Windows line ends too
    out = tmp_path / "v.npy"
    result = run("embed", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    vectors = np.load(out)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, minibert.Encoder.from_pretrained(minilm_dir).encode(texts), atol=1e-6, rtol=0)


def test_a_failed_write_exits_non_zero_and_leaves_no_file(input_file, tmp_path):
    """Under a 2 KB file-size limit (ulimit -f) the vectors (4.6 KB) cannot be written."""
    import resource

    out = tmp_path / "v.npy"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    result = subprocess.run(
        [sys.executable, "-m", "minibert", "embed", str(input_file), "-o", str(out)],
        capture_output=True,
        timeout=300,
        preexec_fn=limit,
    )
    err = result.stderr.decode()
    assert result.returncode != 0 and "File too large" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [input_file]  # neither v.npy nor a temporary file


def test_output_is_checked_before_the_work(input_file, tmp_path):
    cases = [
        (["-o", str(tmp_path)], "is not empty; choose a new folder, or --resume"),  # a folder gets shards
        (["-o", f"{tmp_path}/", "--format", "jsonl"], "a folder output gets .npy shards"),
        (["-o", str(tmp_path / "missing" / "v.npy")], "folder " + str(tmp_path / "missing") + " does not exist"),
        (["-o", str(tmp_path / "v.jsonl"), "--format", "npy"], "--format npy does not match the extension"),
        (["--device", "tpu", "--format", "tsv"], "unknown device 'tpu'"),
        (["--device", "cuda", "--format", "tsv"], "device 'cuda' is not available"),
        (["--max-length", "18446744073709551616", "--format", "tsv"], "max_length must be an integer from 2"),
        (["--model", "", "--format", "tsv"], "model path is empty"),
    ]
    for args, message in cases:
        result = run("embed", str(input_file), *args)
        err = result.stderr.decode()
        assert result.returncode == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


def test_the_format_follows_the_extension(input_file, tmp_path, expected):
    for name in ("v.jsonl", "v.tsv", "v.npy", "v.vectors"):  # an extension of no format takes --format
        result = run("embed", str(input_file), "-o", str(tmp_path / name), *(["--format", "npy"] * name.endswith("rs")))
        assert result.returncode == 0, result.stderr
        summary = result.stderr.decode().strip()
        assert summary.startswith("minibert: embedded 3 texts (384 dimensions, ") and summary.endswith(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["texts.txt", "v.jsonl", "v.tsv", "v.npy", "v.vectors"])
    rows = [json.loads(line)["embedding"] for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(np.array(rows), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "v.vectors"), expected, atol=1e-6, rtol=0)


def test_a_closed_pipe_is_quiet(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("".join(f"sentence number {i}\n" for i in range(300)))
    result = subprocess.run(
        f"{sys.executable} -m minibert embed --format tsv {path} | head -c 100 >/dev/null",
        shell=True,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stderr == b""


@pytest.mark.parametrize(
    "args,message",
    [
        (["fill-mask", "Paris is the [MASK] of France."], "the following arguments are required: --model"),
        (["similarity", "--model", "MINILM_BAD_MODULES", "a", "b"], "modules.json: expected a list of module objects"),
        (["tokenize", "--model", "NO_UNK", "qqqzzz"], "lacks its unknown token '[UNK]'"),
        (["similarity", "\udcff\udcfe", "b"], "texts[0] is not valid Unicode text"),
    ],
)
def test_bad_environments_are_one_line(minilm_dir, tmp_path, args, message):
    bad = tmp_path / "bad"
    shutil.copytree(minilm_dir, bad)
    if "MINILM_BAD_MODULES" in args:
        (bad / "modules.json").write_text("[1, 2]")
    if "NO_UNK" in args:
        spec = json.loads((bad / "tokenizer.json").read_text(encoding="utf-8"))
        del spec["model"]["vocab"]["[UNK]"]
        (bad / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    args = [str(bad) if a in ("MINILM_BAD_MODULES", "NO_UNK") else a for a in args]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:surrogateescape"}
    result = subprocess.run([sys.executable, "-m", "minibert", *args], capture_output=True, timeout=300, env=env)
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fill_mask_help_names_no_default_model():
    out = run("fill-mask", "--help").stdout.decode()
    assert "default: all-MiniLM" not in out and "--model M" in out


def test_uncased_and_cased_on_every_tokenizer_command(tmp_path):
    """A Google folder whose name says neither cased nor uncased: --uncased / --cased settle it."""
    from pathlib import Path

    fixture = Path(__file__).parent / "data" / "uncased_L-2_H-32_A-4"
    folder = tmp_path / "my_bert"
    shutil.copytree(fixture, folder)
    result = run("tokenize", "--model", str(folder), "Hello")
    assert result.returncode == 2 and b"--uncased or --cased" in result.stderr
    lower = run("tokenize", "--model", str(folder), "--uncased", "Hello").stdout.decode()
    upper = run("tokenize", "--model", str(folder), "--cased", "Hello").stdout.decode()
    assert "hello" in lower.split() and "hello" not in upper.split()
    for command in (["similarity", "Hello", "World"], ["embed", "--format", "tsv", "-"]):
        result = run(*command[:1], "--model", str(folder), "--uncased", *command[1:], stdin="Hello\n")
        assert result.returncode == 0, result.stderr
