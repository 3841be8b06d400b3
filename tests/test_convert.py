"""minibert convert: any checkpoint to a Hugging Face folder, written whole or not at all, keeping the
sentence-transformers metadata."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minibert import BertModel, Encoder
from minibert.formats.convert import convert


def test_convert_refuses_a_non_empty_folder_and_force_replaces_it_whole(tiny_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pytorch_model.bin").write_bytes(b"old weights")
    (out / "pytorch_model.bin.index.json").write_text("{}")
    with pytest.raises(FileExistsError, match="is not empty"):
        convert(tiny_folder, out, lowercase=True)
    assert (out / "pytorch_model.bin").read_bytes() == b"old weights"
    (tiny_folder / "vocab.txt").write_text(VOCAB)
    convert(tiny_folder, out, lowercase=True, force=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + "".join(f"w{i}\n" for i in range(35))  # tiny_folder's 40 ids


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_convert_killed_midway_leaves_the_old_folder(tiny_folder, tmp_path):
    (tiny_folder / "vocab.txt").write_text(VOCAB)
    out = tmp_path / "out"
    convert(tiny_folder, out, lowercase=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = textwrap.dedent(f"""
        import os
        import minibert.formats.convert as c
        real = c.save_safetensors
        def die(*args):
            real(*args)
            os.kill(os.getpid(), 9)  # killed after config.json and the weights are written, before the end
        c.save_safetensors = die
        c.convert({str(tiny_folder)!r}, {str(out)!r}, lowercase=False, force=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == -9
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    BertModel.from_pretrained(out)  # still the old, whole folder


def test_convert_keeps_sentence_transformers_metadata(minilm_dir, tmp_path):
    convert(minilm_dir, tmp_path / "converted")
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (tmp_path / "converted" / name).read_bytes() == (minilm_dir / name).read_bytes()
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is riding a horse on the beach under a grey and windy sky.",
    ]
    np.testing.assert_allclose(
        Encoder.from_pretrained(tmp_path / "converted").encode(texts),
        Encoder.from_pretrained(minilm_dir).encode(texts),
        atol=1e-6,
        rtol=0,
    )


def test_module_folders_are_copied_file_by_known_file_and_never_through_a_link_out(minilm_dir, tmp_path):
    import shutil

    from minibert.cli import main

    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    (model / "1_Pooling" / "notes.txt").write_text("not a file minibert reads")
    convert(model, tmp_path / "copied")
    assert sorted(p.name for p in (tmp_path / "copied" / "1_Pooling").iterdir()) == ["config.json"]

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text((model / "1_Pooling" / "config.json").read_text())
    (outside / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    shutil.rmtree(model / "1_Pooling")
    (model / "1_Pooling").symlink_to(outside)
    for args in (["convert", str(model), str(tmp_path / "c")], ["quantize", str(model), str(tmp_path / "q")]):
        assert main(args) == 2
        assert not (tmp_path / args[-1]).exists()
    with pytest.raises(ValueError, match="leads outside the model folder"):
        convert(model, tmp_path / "c2")
    assert not list(tmp_path.rglob("id_rsa"))[1:]  # the key is only where it was
