"""Hub ids through the Hugging Face cache, offline: a real cache layout (refs, snapshots, blobs) built in
a temp dir, HF_HOME pointing at it, HF_HUB_OFFLINE=1; the network is never used."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from reference import randomize_

from minibert import BertModel


def make_repo(cache, repo_id, files: dict, revision="main", commit=None):
    """Lay out `files` (name -> bytes) as huggingface_hub stores a download: blobs named by hash,
    snapshots/<commit>/<name> links to them, refs/<revision> holding the commit."""
    root = cache / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode() + revision.encode()).hexdigest()
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return root / "snapshots" / commit


def tiny_files(tmp_path, layers, name):
    import transformers

    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(config)
    randomize_(model)
    model.save_pretrained(tmp_path / name)
    return {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}


def run(code, hf_home, offline=True):
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0"}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180, env=env
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    home = tmp / "hf_home"
    main = tiny_files(tmp, 2, "main")
    make_repo(home, "org/tiny", main)
    make_repo(home, "org/tiny", tiny_files(tmp, 3, "v1"), revision="v1")
    legacy = {"config.json": main["config.json"], "pytorch_model.bin": _as_bin(tmp, main["model.safetensors"])}
    make_repo(home, "org/legacy", legacy)
    make_repo(home, "org/noweights", {"config.json": main["config.json"]})
    return home


def _as_bin(tmp, safetensors_bytes):
    from safetensors.torch import load

    torch.save(load(safetensors_bytes), tmp / "pytorch_model.bin")
    return (tmp / "pytorch_model.bin").read_bytes()


def test_cached_repo_loads_offline(cache):
    result = run(
        """
        from minibert import BertModel
        print(BertModel.from_pretrained("org/tiny").config.num_hidden_layers)
        print(BertModel.from_pretrained("org/tiny", revision="v1").config.num_hidden_layers)
        print(BertModel.from_pretrained("org/legacy").config.num_hidden_layers)
    """,
        cache,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "3", "2"]


def test_cached_repo_equals_the_folder(cache, tmp_path):
    snapshot = next((cache / "hub" / "models--org--tiny" / "snapshots").iterdir())
    result = run(
        f"""
        import torch
        from minibert import BertModel
        ids = torch.tensor([[1, 5, 7, 2]])
        a = BertModel.from_pretrained("org/tiny", local_files_only=True)(ids).last_hidden_state
        b = BertModel.from_pretrained({str(snapshot)!r})(ids).last_hidden_state
        print(torch.equal(a, b))
    """,
        cache,
        offline=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_not_cached_says_what_is_missing(cache):
    result = run(
        """
        from minibert import BertModel
        BertModel.from_pretrained("org/absent")
    """,
        cache,
    )
    assert "'org/absent' is neither a local folder nor in the Hugging Face cache" in result.stderr
    assert str(cache / "hub") in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr
    result = run(
        """
        from minibert import BertModel
        BertModel.from_pretrained("org/tiny", revision="v9")
    """,
        cache,
    )
    assert "'org/tiny' at revision 'v9' is neither a local folder nor in the Hugging Face cache" in result.stderr


def test_local_files_only(cache):
    result = run(
        """
        from minibert import BertModel
        BertModel.from_pretrained("org/absent", local_files_only=True)
    """,
        cache,
        offline=False,
    )
    assert "neither a local folder nor in the Hugging Face cache" in result.stderr


def test_cached_snapshot_without_weights(cache):
    result = run(
        """
        from minibert import BertModel
        BertModel.from_pretrained("org/noweights")
    """,
        cache,
    )
    assert "holds no weights" in result.stderr and "models--org--noweights" in result.stderr


def test_cli_uses_the_cache(cache):
    env = {**os.environ, "HF_HOME": str(cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "minibert", "tokenize", "--model", "org/absent", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2 and "neither a local folder nor in the Hugging Face cache" in result.stderr


def test_a_hub_failure_says_what_happened(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    import minibert.formats.hub as hub

    def unreachable(repo_id, revision=None, local_files_only=False):
        try:
            raise ConnectionError("connection refused")
        except ConnectionError as cause:
            raise LocalEntryNotFoundError("not in the cache") from cause

    monkeypatch.setattr(hub, "_download", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(FileNotFoundError) as caught:
        hub.resolve("org/not-cached")
    assert "the Hugging Face Hub could not be reached (ConnectionError)" in str(caught.value)
    assert "downloading is off" not in str(caught.value)
    with pytest.raises(FileNotFoundError, match=r"downloading is off \(local_files_only=True\)"):
        hub.resolve("org/not-cached", local_files_only=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"downloading is off \(HF_HUB_OFFLINE=1\)"):
        hub.resolve("org/not-cached")


def test_default_model_is_the_package_model_folder(minilm_dir):
    import minibert

    assert minibert.default_model() == minilm_dir and (minilm_dir / "config.json").is_file()


def test_an_empty_model_path_is_refused(tmp_path, monkeypatch, tiny_folder):
    monkeypatch.chdir(tiny_folder)  # a model folder that "" would otherwise load
    with pytest.raises(ValueError, match="model path is empty"):
        BertModel.from_pretrained("")
