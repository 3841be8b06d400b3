"""Checkpoints with random weights saved in the layouts real rerankers, classifiers and SPLADE models ship in,
with MiniLM's real tokenizer: the fixtures in conftest.py build them once a session."""

from __future__ import annotations

import shutil

import torch
from reference import randomize_

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def copy_tokenizer(minilm_dir, folder) -> None:
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, folder / name)


def small_bert(minilm_dir, tmp_path, **config):
    """A random BertForSequenceClassification the size of a small test model, with MiniLM's real tokenizer."""
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(vocab_size=30522, attn_implementation="eager", **SMALL, **config)
    ).eval()
    randomize_(model)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    copy_tokenizer(minilm_dir, folder)
    return folder, model


def cross_encoder(minilm_dir, tmp):
    """Saved as cross-encoder/ms-marco-MiniLM-L-6-v2 is: one label, with sentence-transformers' CrossEncoder
    entry in config.json (an Identity activation: raw logits)."""
    from sentence_transformers import CrossEncoder as Reference

    folder, _ = small_bert(minilm_dir, tmp, num_labels=1)
    reference = Reference(str(folder), device="cpu", activation_fn=torch.nn.Identity())
    reference.save(str(tmp / "ce"))
    return tmp / "ce"


def splade(minilm_dir, tmp):
    """A random BertForMaskedLM saved as a sentence-transformers SparseEncoder (MLMTransformer, SpladePooling)."""
    import transformers
    from sentence_transformers.sparse_encoder import SparseEncoder as Reference
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=30522, **SMALL)).eval()
    randomize_(model)
    model.save_pretrained(tmp / "mlm")
    copy_tokenizer(minilm_dir, tmp / "mlm")
    transformer = MLMTransformer(str(tmp / "mlm"), max_seq_length=128)
    Reference(modules=[transformer, SpladePooling(pooling_strategy="max")], device="cpu").save(str(tmp / "st"))
    return tmp / "st"
