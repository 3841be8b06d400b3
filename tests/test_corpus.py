"""A corpus larger than memory: Encoder.encode_stream, `minibert embed -o DIR/` with shards, a manifest and
--resume, read_vectors, JSONL and Parquet inputs, and runs killed at random points."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from minibert import Encoder
from minibert.corpus.shards import _sha256, _write_npy, read_manifest, read_vectors


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


def corpus(n, seed=0):
    rng = random.Random(seed)
    words = "the a model reads every token of each sentence and writes one vector for it quickly".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def embed(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "minibert", "embed", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err.decode()


def test_encode_stream_equals_encode_and_reads_lazily(encoder):
    texts = corpus(150)
    expected = encoder.encode(texts)
    pulled = []

    def generate():
        for t in texts:
            pulled.append(t)
            yield t

    stream = encoder.encode_stream(generate(), chunk_size=40)
    start, first = next(stream)
    assert start == 0 and first.shape == (40, 384) and len(pulled) == 40  # only one chunk read so far
    chunks = [(start, first), *stream]
    assert [s for s, _ in chunks] == [0, 40, 80, 120]
    np.testing.assert_allclose(np.concatenate([v for _, v in chunks]), expected, atol=1e-6, rtol=0)
    with pytest.raises(TypeError, match=r"texts\[3\] is int"):
        list(encoder.encode_stream(["a", "b", "c", 4]))


def test_encode_stream_gives_free_memory_back_after_each_chunk(encoder, monkeypatch):
    calls = []
    monkeypatch.setattr("minibert.engine.core.release_free_memory", lambda: calls.append(1))
    for n, _ in enumerate(encoder.encode_stream(corpus(50), chunk_size=20), 1):
        assert len(calls) == n  # before each chunk is handed out
    assert n == 3


def test_jsonl_to_a_folder_with_ids(encoder, tmp_path):
    texts = corpus(90)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"body": t, "doc": f"d{i}"}) + "\n" for i, t in enumerate(texts)))
    code, err = finish(
        embed(source, "--text-field", "body", "--id-field", "doc", "-o", f"{tmp_path / 'v'}/", "--chunk-size", 32)
    )
    assert code == 0, err
    assert "minibert: embedded 90 texts (" in err and "-> " in err and "(90 rows in 3 shards)" in err
    vectors = read_vectors(tmp_path / "v", verify=True)
    assert vectors.shape == (90, 384) and vectors.ids() == [f"d{i}" for i in range(90)]
    np.testing.assert_allclose(np.asarray(vectors), encoder.encode(texts), atol=1e-6, rtol=0)
    whole = np.asarray(vectors)
    np.testing.assert_array_equal(vectors[[5, 40, 89]], whole[[5, 40, 89]])
    for index in (slice(20, 70), slice(None, None, -7), slice(-5, None), slice(80, 10, -3), whole[:, 0] > 0):
        np.testing.assert_array_equal(vectors[index], whole[index])  # within and across shards of 32
    np.testing.assert_array_equal(vectors[-1], whole[89])
    manifest = read_manifest(tmp_path / "v")
    assert manifest["complete"] and manifest["dim"] == 384 and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["settings"]["pooling"] == "mean" and manifest["settings"]["normalize"] is True
    assert manifest["input"]["size"] == source.stat().st_size and len(manifest["input"]["head_sha256"]) == 64
    assert [s["rows"] for s in manifest["shards"]] == [32, 32, 26]


def test_repeated_sigkill_and_resume_give_the_uninterrupted_vectors(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(corpus(480, seed=1)) + "\n")
    args = ["--chunk-size", 20, "--batch-size", 8]
    code, err = finish(embed(source, "-o", f"{tmp_path / 'whole'}/", *args))
    assert code == 0, err
    whole = read_vectors(tmp_path / "whole")
    rng = random.Random(7)
    kills = 0
    killed_dir = tmp_path / "killed"

    def rows_done():
        return read_manifest(killed_dir)["rows"] if (killed_dir / "manifest.json").is_file() else -1

    for attempt in range(30):
        before = rows_done()
        process = embed(source, "-o", f"{killed_dir}/", *args, *(["--resume"] if attempt else []))
        while process.poll() is None and rows_done() <= before:  # some progress first, then a kill anywhere
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        code, err = finish(process)
        if code == 0:
            break
        assert code == -signal.SIGKILL, err
        manifest = read_manifest(tmp_path / "killed")  # always a whole, valid manifest
        if manifest["complete"]:  # killed on its way out, after the last shard
            read_vectors(tmp_path / "killed", verify=True)
        else:
            with pytest.warns(UserWarning, match="holds an interrupted run: the first .* rows of its input"):
                read_vectors(tmp_path / "killed", verify=True)  # naming only whole shards
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                read_vectors(tmp_path / "killed", partial=True)  # told: no warning
        assert manifest["rows"] == sum(s["rows"] for s in manifest["shards"])
    assert code == 0 and kills >= 2, (code, kills)
    killed = read_vectors(tmp_path / "killed", verify=True)
    assert np.asarray(killed).tobytes() == np.asarray(whole).tobytes()  # byte-identical, no row lost or repeated
    assert killed.ids() == list(range(480))


def test_resume_refuses_a_changed_input_or_setting(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(corpus(30)) + "\n")
    out = f"{tmp_path / 'v'}/"
    assert finish(embed(source, "-o", out, "--chunk-size", 10))[0] == 0
    code, err = finish(embed(source, "-o", out, "--chunk-size", 10, "--pooling", "cls", "--resume"))
    assert code == 2 and "cannot resume: the settings changed since the recorded run (pooling)" in err
    code, err = finish(embed(source, "-o", out, "--chunk-size", 12, "--resume"))
    assert code == 2 and "the chunk size changed" in err
    with open(source, "a") as f:
        f.write("one more line\n")
    code, err = finish(embed(source, "-o", out, "--chunk-size", 10, "--resume"))
    assert code == 2 and "cannot resume: the input changed" in err and "size" in err
    code, err = finish(embed(source, "-o", out, "--chunk-size", 10))
    assert code == 2 and "is not empty; choose a new folder, or --resume" in err


def test_ctrl_c_exits_130_and_keeps_finished_shards(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(corpus(600, seed=2)) + "\n")
    out = tmp_path / "v"
    process = embed(source, "-o", f"{out}/", "--chunk-size", 20, "--batch-size", 8)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "shard-00001.npy").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130, err
    assert "Traceback" not in err
    assert f"interrupted; {out} keeps " in err and "run the same command with --resume to continue" in err
    manifest = read_manifest(out)
    assert 0 < manifest["rows"] < 600 and not manifest["complete"]
    code, err = finish(embed(source, "-o", f"{out}/", "--chunk-size", 20, "--batch-size", 8, "--resume"))
    assert code == 0, err
    assert read_vectors(out, verify=True).shape == (600, 384)


def test_bad_input_lines_are_named(tmp_path, encoder):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\nalso fine\ncaf\xe9\n")
    code, err = finish(embed(bad, "-o", f"{tmp_path / 'a'}/"))
    assert code == 2 and "bad.txt: line 4 is not UTF-8 text (byte 3)" in err
    code, err = finish(embed(bad, "-o", f"{tmp_path / 'b'}/", "--errors", "replace"))
    assert code == 0, err
    vectors = read_vectors(tmp_path / "b")
    assert vectors.ids() == [0, 1, 2, 3]  # the empty line is a text of its own: rows stay aligned with lines
    np.testing.assert_allclose(
        np.asarray(vectors), encoder.encode(["fine", "", "also fine", "caf\ufffd"]), atol=1e-6, rtol=0
    )
    jsonl = tmp_path / "bad.jsonl"
    for content, message in [
        ('{"text": "a"}\n{"body": "b"}\n', "line 2 has no field 'text'"),
        ('{"text": "a"}\n{"text": 7}\n', "line 2: field 'text' is int, not a string"),
        ('{"text": "a"}\nnot json\n', "line 2 is not JSON"),
    ]:
        jsonl.write_text(content)
        code, err = finish(embed(jsonl, "-o", f"{tmp_path / 'c'}/"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        for leftover in (tmp_path / "c").iterdir():
            leftover.unlink()


def test_unwritable_or_full_output(tmp_path):
    import resource

    source = tmp_path / "in.txt"
    source.write_text("\n".join(corpus(200, seed=3)) + "\n")
    code, err = finish(embed(source, "-o", f"{tmp_path / 'missing' / 'v'}/"))
    assert code == 2 and "does not exist" in err

    def limit():  # room for the manifest, not for a 30.8 KB shard of 20 vectors: "File too large"
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = f"{tmp_path / 'full'}/"
    code, err = finish(embed(source, "-o", out, "--chunk-size", 20, preexec_fn=limit))
    assert code == 2 and "File too large" in err
    assert len(read_vectors(tmp_path / "full", verify=True)) == 0  # the half-written shard is not counted
    assert not [p for p in (tmp_path / "full").iterdir() if p.name != "manifest.json"]  # nor left behind
    code, err = finish(embed(source, "-o", out, "--chunk-size", 20, "--resume"))
    assert code == 0, err
    assert read_vectors(tmp_path / "full", verify=True).shape == (200, 384)


def test_parquet_input(tmp_path, encoder):
    pa = pytest.importorskip("pyarrow", reason="the parquet extra (pyarrow) is not installed")
    import pyarrow.parquet as pq

    texts = corpus(50, seed=4)
    pq.write_table(
        pa.table({"id": [1000 + i for i in range(50)], "content": texts}), tmp_path / "in.parquet", row_group_size=16
    )
    code, err = finish(
        embed(
            tmp_path / "in.parquet",
            "--text-field",
            "content",
            "--id-field",
            "id",
            "-o",
            f"{tmp_path / 'v'}/",
            "--chunk-size",
            20,
        )
    )
    assert code == 0, err
    vectors = read_vectors(tmp_path / "v")
    assert vectors.ids() == [1000 + i for i in range(50)]
    np.testing.assert_allclose(np.asarray(vectors), encoder.encode(texts), atol=1e-6, rtol=0)
    code, err = finish(embed(tmp_path / "in.parquet", "--text-field", "nope", "-o", f"{tmp_path / 'w'}/"))
    assert code == 2 and "no column 'nope' (columns: id, content)" in err


def test_import_minibert_imports_no_extra():
    code = (
        "import sys, minibert, minibert.corpus.shards, minibert.cli; "
        "print(sorted(m for m in ('pyarrow', 'ray', 'matplotlib', 'starlette', 'uvicorn', 'prometheus_client') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_shard_holds_the_array_whatever_its_memory_order(tmp_path):
    vectors = np.asfortranarray(np.random.default_rng(0).standard_normal((50, 8), dtype=np.float32))
    digest = _write_npy(tmp_path / "s.npy", vectors)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy", allow_pickle=False), vectors)
    assert digest == _sha256(tmp_path / "s.npy")


# --- a vectors folder checked against its manifest (the manifest is never trusted alone) ----------------


@pytest.fixture
def folder(encoder, tmp_path):
    """A finished folder of 3 shards (10, 10 and 5 rows) with ids, written without a subprocess."""
    from minibert.corpus.shards import Source, embed_to_folder, run_record

    source = tmp_path / "in.txt"
    source.write_text("".join(t + "\n" for t in corpus(25, seed=3)))
    settings, model = run_record(encoder, encoder_folder(encoder))
    embed_to_folder(encoder, Source(str(source)), tmp_path / "v", settings=settings, model=model, chunk_size=10)
    return tmp_path / "v"


def encoder_folder(encoder):
    import minibert

    return minibert.default_model()


def edit_manifest(folder, change):
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda f: (f / "shard-00001.npy").unlink(), r"shard-00001\.npy: shard missing"),
        (lambda f: np.save(f / "shard-00002.npy", np.zeros((5, 384))), r"shard-00002\.npy: holds float64"),
        (lambda f: np.save(f / "shard-00002.npy", np.zeros((4, 384), np.float32)), r"shape \(4, 384\), but"),
        (lambda f: (f / "shard-00000.npy").write_bytes((f / "shard-00000.npy").read_bytes()[:-100]), r"bytes, but a"),
        (lambda f: np.save(f / "shard-00000.npy", np.array([{"a": 1}] * 10, dtype=object)), r"holds object"),
        (lambda f: (f / "shard-00001.ids.json").write_text("[1, 2]"), r"holds 2 ids, but its shard has 10 rows"),
        (lambda f: (f / "shard-00001.ids.json").write_text('{"k": 1}'), r"holds a dict"),
        (lambda f: edit_manifest(f, lambda m: m["shards"][1].update(start=12)), r"shards\[1\] starts at row 12"),
        (lambda f: edit_manifest(f, lambda m: m.update(rows=40)), r"the shards hold 25 rows, but the manifest says 40"),
        (lambda f: edit_manifest(f, lambda m: m.pop("shards")), r"manifest\.json: shards is missing"),
        (lambda f: edit_manifest(f, lambda m: m.update(dim="384")), r"dim is str '384', not int"),
        (lambda f: edit_manifest(f, lambda m: m.update(shards="abc")), r"shards is str 'abc', not list"),
        (lambda f: edit_manifest(f, lambda m: m["shards"][0].update(file="../x.npy")), r"'\.\./x\.npy' is not a file"),
        (lambda f: edit_manifest(f, lambda m: m["shards"][0].update(ids="/etc/hostname")), r"is not a file inside"),
    ],
)
def test_a_folder_that_disagrees_with_its_manifest_is_refused_by_name(folder, tamper, message):
    tamper(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as refused:
        read_vectors(folder).ids()
    assert "allow_pickle" not in str(refused.value)


def test_a_shard_linked_from_outside_the_folder_is_refused(folder, tmp_path):
    outside = tmp_path / "outside.npy"
    (folder / "shard-00000.npy").rename(outside)
    (folder / "shard-00000.npy").symlink_to(outside)
    with pytest.raises(ValueError, match=r"'shard-00000\.npy' is not a file inside"):
        read_vectors(folder)


def test_resume_refuses_a_folder_whose_counted_shard_is_gone(folder, encoder, tmp_path):
    from minibert.corpus.shards import Source, embed_to_folder

    manifest = read_manifest(folder)
    edit_manifest(folder, lambda m: m.update(complete=False))
    (folder / "shard-00002.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard-00002\.npy: shard missing"):
        embed_to_folder(
            encoder,
            Source(str(tmp_path / "in.txt")),
            folder,
            settings=manifest["settings"],
            model=manifest["model"],
            chunk_size=10,
            resume=True,
        )


@pytest.mark.parametrize(
    "index",
    [
        True,
        False,
        np.True_,
        (slice(None), slice(None, 5)),
        ([0, 12, 24], 3),
        (-1, slice(None, 3)),
        (Ellipsis, 0),
        np.arange(25) % 3 == 0,
        [[0, 1], [23, 24]],
        (slice(2, 20, 5), [0, 383]),
        None,
        (3, 7),
        slice(-4, None),
    ],
)
def test_indexing_follows_numpys_rules(folder, index):
    vectors = read_vectors(folder)
    whole = np.asarray(vectors)
    assert vectors.shape == whole.shape == (25, 384) and vectors.dtype == whole.dtype == np.float32
    np.testing.assert_array_equal(vectors[index], whole[index])


def run_main(capsys, *args):
    from minibert.cli import main

    code = main(["embed", *map(str, args)])
    return code, capsys.readouterr().err


def test_resume_takes_the_recorded_chunk_size_and_says_when_already_complete(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("\n".join(corpus(12)) + "\n")
    out = f"{tmp_path / 'v'}/"
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", out, "--chunk-size", 12)
    assert code == 0 and err.rstrip().endswith("(12 rows in 1 shard)"), err
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", out, "--resume")  # no --chunk-size repeated
    assert code == 0 and err.strip() == f"minibert: {tmp_path / 'v'} was already complete: 12 rows in 1 shard", err


def test_force_starts_a_folder_over_but_deletes_only_a_runs_files(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("\n".join(corpus(12)) + "\n")
    out = tmp_path / "v"
    assert run_main(capsys, tmp_path / "in.txt", "-o", f"{out}/", "--chunk-size", 5)[0] == 0
    with open(tmp_path / "in.txt", "a") as f:
        f.write("one more\n")
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", f"{out}/", "--resume")
    assert code == 2 and "start over with --force" in err
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", f"{out}/", "--force", "--chunk-size", 10)
    assert code == 0, err
    assert read_vectors(out).shape == (13, 384) and len(read_manifest(out)["shards"]) == 2
    (out / "notes.txt").write_text("mine")
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", f"{out}/", "--force")
    assert code == 2 and "holds files that are not a minibert run's (notes.txt" in err
    assert (out / "notes.txt").read_text() == "mine" and read_vectors(out).shape == (13, 384)


def test_a_bad_max_length_is_refused_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "in.txt").write_text("one\n")
    code, err = run_main(capsys, tmp_path / "in.txt", "-o", f"{tmp_path / 'v'}/", "--max-length", 100000)
    assert code == 2 and "max_length must be an integer from 2" in err
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_an_id_column_that_cannot_be_recorded_is_refused_before_a_shard(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow", reason="the parquet extra (pyarrow) is not installed")
    import datetime

    import pyarrow.parquet as pq

    days = [datetime.datetime(2026, 1, 1) + datetime.timedelta(days=i) for i in range(6)]
    pq.write_table(pa.table({"text": corpus(6), "when": days}), tmp_path / "in.parquet")
    code, err = run_main(capsys, tmp_path / "in.parquet", "--id-field", "when", "-o", f"{tmp_path / 'v'}/")
    assert code == 2 and "row 0: column 'when' is datetime; ids must be strings or numbers" in err
    assert not list((tmp_path / "v").glob("shard-*"))


def test_shards_are_written_by_time_too_and_a_resume_batches_alike(tmp_path, encoder, monkeypatch):
    """A small run checkpoints as it goes: with a shard every 0 s, each encode chunk is a shard of its own,
    and the rows still equal one encode of the whole input."""
    from minibert.corpus import shards
    from minibert.corpus.shards import Source, embed_to_folder, run_record

    monkeypatch.setattr(shards, "ENCODE_ROWS", 8)
    texts = corpus(27, seed=5)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    settings, model = run_record(encoder, encoder_folder(encoder))
    manifest = embed_to_folder(
        encoder, Source(str(tmp_path / "in.txt")), tmp_path / "v", settings=settings, model=model, shard_seconds=0.0
    )
    assert [s["rows"] for s in manifest["shards"]] == [8, 8, 8, 3] and manifest["chunk_size"] == 4096
    np.testing.assert_allclose(np.asarray(read_vectors(tmp_path / "v")), encoder.encode(texts), atol=1e-6, rtol=0)


def test_chunk_size_bounds_every_shard(tmp_path):
    """--chunk-size 600 gives shards of 600 rows (texts are encoded 512 at a time at most, and never across a
    chunk's end), and a resumed run encodes the same pieces."""
    source = tmp_path / "in.txt"
    source.write_text("\n".join(corpus(1300, seed=3)) + "\n")
    code, err = finish(embed(source, "-o", f"{tmp_path / 'v'}/", "--chunk-size", 600))
    assert code == 0, err
    assert [s["rows"] for s in read_manifest(tmp_path / "v")["shards"]] == [600, 600, 100]


def test_embed_takes_a_dtype_and_records_it(tmp_path, encoder):
    source = tmp_path / "in.txt"
    texts = corpus(20, seed=4)
    source.write_text("\n".join(texts) + "\n")
    code, err = finish(embed(source, "-o", f"{tmp_path / 'v'}/", "--dtype", "bfloat16"))
    assert code == 0, err
    assert read_manifest(tmp_path / "v")["settings"]["dtype"] == "bfloat16"
    got, want = np.asarray(read_vectors(tmp_path / "v")), encoder.encode(texts)
    assert ((got * want).sum(1) > 0.99).all()  # bfloat16's vectors, within its rounding of float32's


def test_input_format_overrides_the_extension(tmp_path, encoder):
    texts = corpus(5, seed=6)
    source = tmp_path / "rows.txt"  # JSON lines under a .txt name
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    code, err = finish(embed(source, "--input-format", "jsonl", "-o", tmp_path / "v.npy"))
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), encoder.encode(texts), atol=1e-6, rtol=0)
