"""Where `minibert embed` and the other writers put their output, and what they read: an input means the
same whatever the output, `-o` writes what the user meant (through a symlink, into a FIFO or a device,
never a file named like a folder or an extension it cannot write), and no writer eats its own source."""

from __future__ import annotations

import json
import os
import stat
import threading

import numpy as np
import pytest

from minibert import Encoder
from minibert.cli import main
from minibert.formats.atomic import atomic_open

TEXTS = ["A man is eating food.", "The girl is carrying a baby.", "短い", "", "A dog barks at the moon " * 5]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


def run(capsys, *args):
    """`minibert ARGS` in this process: (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_jsonl_and_parquet_mean_their_text_field_whatever_the_output(tmp_path, capsys, encoder):
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(TEXTS)))
    assert run(capsys, "embed", source, "--text-field", "body", "-o", tmp_path / "x.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), encoder.encode(TEXTS), atol=1e-6, rtol=0)
    pa = pytest.importorskip("pyarrow", reason="the parquet extra (pyarrow) is not installed")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": TEXTS}), tmp_path / "data.parquet")
    code, err = run(capsys, "embed", tmp_path / "data.parquet", "--text-field", "content", "-o", tmp_path / "p.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), encoder.encode(TEXTS), atol=1e-6, rtol=0)
    code, err = run(capsys, "embed", source, "--text-field", "nope", "-o", tmp_path / "y.npy")
    assert code == 2 and "data.jsonl: line 1 has no field 'nope'" in err and not (tmp_path / "y.npy").exists()


def test_errors_replace_applies_to_one_file_output(tmp_path, capsys, encoder):
    (tmp_path / "in.txt").write_bytes(b"caf\xe9\nfine\n")
    code, err = run(capsys, "embed", tmp_path / "in.txt", "-o", tmp_path / "x.npy")
    assert code == 2 and "in.txt is not UTF-8 text (byte 3)" in err
    assert run(capsys, "embed", tmp_path / "in.txt", "--errors", "replace", "-o", tmp_path / "x.npy")[0] == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), encoder.encode(["caf\ufffd", "fine"]), atol=1e-6, rtol=0)


def test_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, capsys, encoder):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    target = tmp_path / "store" / "v.npy"
    target.parent.mkdir()
    target.write_bytes(b"old")
    (tmp_path / "v.npy").symlink_to(target)
    assert run(capsys, "embed", tmp_path / "in.txt", "-o", tmp_path / "v.npy")[0] == 0
    assert (tmp_path / "v.npy").is_symlink() and os.readlink(tmp_path / "v.npy") == str(target)
    np.testing.assert_allclose(np.load(target), encoder.encode(["one", "two"]), atol=1e-6, rtol=0)
    assert sorted(p.name for p in target.parent.iterdir()) == ["v.npy"]  # no temporary file left


def test_output_into_a_fifo_writes_into_it(tmp_path, capsys, encoder):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo, "rb").read()))
    reader.start()
    code, err = run(capsys, "embed", tmp_path / "in.txt", "--format", "tsv", "-o", fifo)
    reader.join(timeout=60)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO, not a file renamed over it
    rows = np.array([[float(x) for x in line.split("\t")] for line in received[0].decode().splitlines()])
    np.testing.assert_allclose(rows, encoder.encode(["one", "two"]), atol=1e-6, rtol=0)


def test_a_device_node_is_written_not_replaced(tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the same device as /dev/null
    except PermissionError:
        pytest.skip("making a device node needs root")
    with atomic_open(null) as f:
        f.write(b"x" * 100)
    assert stat.S_ISCHR(os.stat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


@pytest.mark.parametrize(
    "output, message",
    [
        ("outdir", "write {d}/outdir/ for a folder of shards, or {d}/outdir.npy (or --format) for one file"),
        ("v.csv", "cannot write .csv files: -o takes a .npy, .jsonl or .tsv file, or DIR/ for a folder"),
    ],
)
def test_an_output_whose_kind_is_unclear_is_refused(tmp_path, capsys, output, message):
    (tmp_path / "in.txt").write_text("one\n")
    code, err = run(capsys, "embed", tmp_path / "in.txt", "-o", tmp_path / output)
    assert code == 2 and message.format(d=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    assert run(capsys, "embed", tmp_path / "in.txt", "--format", "tsv", "-o", tmp_path / "outdir")[0] == 0
    assert (tmp_path / "outdir").is_file()  # with --format, a bare name is a file


def test_writers_never_eat_their_source(tmp_path, capsys, minilm_dir):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    before = sorted(p.name for p in model.iterdir())
    code, err = run(capsys, "quantize", model, model, "--force")
    assert code == 2 and "would overwrite the model folder" in err
    code, err = run(capsys, "quantize", model, model / "int8")
    assert code == 2 and "would overwrite the model folder" in err
    (tmp_path / "link").symlink_to(model)
    code, err = run(capsys, "convert", tmp_path / "link", model, "--force")
    assert code == 2 and "would overwrite the source checkpoint" in err
    encoder = Encoder.from_pretrained(model)
    with pytest.raises(ValueError, match="would overwrite the model folder it was loaded from"):
        encoder.save_pretrained(tmp_path / "link", force=True)
    code, err = run(capsys, "dump", "hi", "--model", model, "-o", model / "model.safetensors")
    assert code == 2 and "would overwrite a file of the model folder" in err
    (tmp_path / "texts.tsv").write_text("hi\n")  # texts, one per line, under a name -o could write
    code, err = run(capsys, "embed", tmp_path / "texts.tsv", "-o", tmp_path / "texts.tsv")
    assert code == 2 and "is the input file" in err and (tmp_path / "texts.tsv").read_text() == "hi\n"
    assert sorted(p.name for p in model.iterdir()) == before
    Encoder.from_pretrained(model)  # still loads


def test_a_folder_as_input_is_named_as_a_folder(tmp_path, capsys):
    for output in (tmp_path / "x.npy", f"{tmp_path / 'v'}/"):
        code, err = run(capsys, "embed", tmp_path, "-o", output)
        assert code == 2 and f"cannot read {tmp_path}: it is a folder" in err


def test_every_error_line_names_its_command(tmp_path, capsys):
    cases = [
        (["embed", "--batch-size", "0", "-o", tmp_path / "x.npy"], "minibert embed: error: --batch-size must be"),
        (["embed", tmp_path / "missing.txt", "-o", tmp_path / "x.npy"], "minibert embed: error: cannot read"),
        (["embed", "--bogus"], "minibert embed: error: unrecognized arguments: --bogus (see --help)"),
        (["compare", tmp_path / "a", tmp_path / "b"], "minibert compare: error: "),
        (["bogus"], "minibert: error: argument COMMAND: invalid choice"),
    ]
    for args, start in cases:
        code, err = run(capsys, *args)
        assert code == 2 and err.startswith(start) and len(err.splitlines()) == 1, (args, err)


def test_untrusted_text_cannot_reach_the_terminal_raw(capsys):
    assert main(["similarity", "--backend", "numpy", "red \x1b[31mtext", "rtl \u202eevil"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[31mtext" in out and "\\u202eevil" in out


def test_attention_with_png_alone_writes_no_page(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib", reason="the viz extra (matplotlib) is not installed")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "attention.html").write_text("an earlier page")
    assert main(["attention", "A short text.", "--png", "heatmaps"]) == 0
    assert (tmp_path / "attention.html").read_text() == "an earlier page"
    assert len(list((tmp_path / "heatmaps").glob("layer_*.png"))) == 6
    assert main(["attention", "A short text."]) == 0 and "<html" in (tmp_path / "attention.html").read_text()


def test_one_progress_bar_counts_texts_and_warnings_go_above_it(encoder, capsys, monkeypatch):
    texts = [f"text number {i} " * (1 + i % 7) for i in range(60)]
    encoder.encode(texts, batch_size=8, show_progress=True)
    bar = capsys.readouterr().err
    assert "60/60" in bar and "text/s" in bar and "batch" not in bar
    import tqdm

    from minibert.cli import show_warning

    written = []
    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, s, file=None, **kw: written.append(s)))
    show_warning(UserWarning("3 of 9 texts were \x1b[2Jtruncated"), UserWarning, "x.py", 1)
    assert written == ["minibert: warning: 3 of 9 texts were \\x1b[2Jtruncated"]
