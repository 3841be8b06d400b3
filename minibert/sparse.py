"""SPLADE sparse vectors on the engine: a BertForMaskedLM's logits over its vocabulary, pooled per text as
the largest log(1 + relu(logit)) over its tokens (naver/splade-cocondenser-*, sentence-transformers'
SparseEncoder with MLMTransformer and SpladePooling). A text's vector has one weight per vocabulary entry,
nearly all zero: `encode` gives each text's non-zero entries as (indices, values), largest first.

    >>> sparse = SparseEncoder.from_pretrained("naver/splade-cocondenser-ensembledistil")
    >>> indices, values = sparse.encode(["a cat sat on the mat"], top_k=64)[0]
    >>> sparse.decode(indices, values)[:3]   # [("cat", 2.1), ("mat", 1.9), ...]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minibert.config import read_json
from minibert.encoder import Encoder
from minibert.formats.hub import resolve
from minibert.heads import masked_lm
from minibert.settings import as_device, as_dtype, check_quantize, max_length_for
from minibert.tokenizer import Tokenizer, as_text_list

# texts per engine call: each micro-batch's logits are (texts, tokens, vocabulary) floats, 250 MB at the
# engine's 2,048 tokens for a 30,522-entry vocabulary; the pooled (texts, vocabulary) rows of a piece are
# made sparse before the next
PIECE = 256


class SparseEncoder:
    """A masked-LM checkpoint behind the engine with SPLADE pooling."""

    def __init__(self, model, tokenizer: Tokenizer, *, max_length: int | None = None, fast: bool = True):
        word_embeddings = model.bert.embeddings.word_embeddings.weight  # tied: the head writes onto the vocabulary

        def head(h):  # (B, L, H) token vectors -> (B, L, V) masked-LM logits
            return model.mlm(h, word_embeddings)

        # micro-batches of at most 1,024 tokens: their logits (tokens x vocabulary floats, 125 MB for a 30,522
        # vocabulary) are written once and read once; at the engine's usual 2,048 a 1,000-document run took
        # 12% longer (scripts/bench.py --cases rerank, 2-core Xeon)
        self.encoder = Encoder(
            model.bert, tokenizer, pooling="splade", max_length=max_length, fast=fast, head=head, max_batch_tokens=1024
        )
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, name_or_path, *, device=None, dtype=None, fast=True, max_length=None, quantize=None
    ) -> SparseEncoder:
        """A folder with masked-LM weights (cls.predictions.*); a sentence-transformers SparseEncoder folder's
        modules.json must hold the MLM transformer and SPLADE pooling minibert computes (max, relu), and its
        max_seq_length is kept. `quantize="int8"`: the encoder layers compute in 8 bits, calibrated now (the
        masked-LM head stays float32)."""
        folder = resolve(name_or_path)
        check_quantize(quantize, as_device(device), as_dtype(dtype))
        settings = read_sparse_settings(folder)
        model = masked_lm(folder, device=device, dtype=dtype)
        tokenizer = Tokenizer.from_pretrained(folder)
        max_length = max_length or settings.get("max_length")
        if quantize:
            from minibert.fast.quantize import quantize_calibrated

            quantize_calibrated(model.bert, tokenizer, max_length_for(tokenizer, model.config, max_length))
        return cls(model, tokenizer, max_length=max_length, fast=fast)

    def encode(self, texts, *, top_k: int | None = None, batch_size: int = 32):
        """Each text's non-zero weights as (indices int64, values float32), largest first, at most `top_k` of
        them (all by default). One text (a string) gives its pair alone."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        single = isinstance(texts, str)
        texts = as_text_list(texts, "texts")
        out = []
        for start in range(0, len(texts), PIECE):
            dense = self.dense(texts[start : start + PIECE], batch_size=batch_size)
            out += [sparse_row(row, top_k) for row in dense]
        return out[0] if single else out

    def dense(self, texts, batch_size: int = 32) -> np.ndarray:
        """(N, vocabulary) float32 weights: the whole vectors, zeros included."""
        return self.encoder.encode(texts, batch_size=batch_size, show_progress=False)

    def decode(self, indices, values=None) -> list:
        """The vocabulary entries of `indices` (with their `values`: (token, value) pairs)."""
        tokens = self.tokenizer.convert_ids_to_tokens(indices)
        return tokens if values is None else [(t, float(v)) for t, v in zip(tokens, values)]


def sparse_row(row: np.ndarray, top_k: int | None) -> tuple[np.ndarray, np.ndarray]:
    nonzero = np.flatnonzero(row > 0)
    order = nonzero[np.argsort(-row[nonzero], kind="stable")][:top_k]
    return order.astype(np.int64), row[order].astype(np.float32)


def read_sparse_settings(folder) -> dict:
    """What a sentence-transformers SparseEncoder folder says about computing it: {"max_length": n} where its
    sentence_bert_config.json gives one; a pooling other than SPLADE's max over relu is refused."""
    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        return {}
    modules = read_json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    if kinds != ["MLMTransformer", "SpladePooling"]:
        raise ValueError(
            f"{folder / 'modules.json'}: minibert's SparseEncoder is MLMTransformer then SpladePooling, not {kinds}"
        )
    pooling = [m for m in modules if str(m.get("type", "")).endswith("SpladePooling")][0]
    config_file = folder / pooling.get("path", "") / "config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    strategy, activation = config.get("pooling_strategy", "max"), config.get("activation_function", "relu")
    if (strategy, activation) != ("max", "relu"):
        raise ValueError(
            f"{config_file}: SPLADE pooling {strategy!r} over {activation!r} is not supported (max over relu is)"
        )
    settings = {}
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        length = read_json(st_config).get("max_seq_length")
        if length is not None:
            settings["max_length"] = length
    return settings
