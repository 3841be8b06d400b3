"""Scoring texts and pairs with a sequence-classification checkpoint, on the engine: `CrossEncoder` reranks
documents for a query (cross-encoder/ms-marco-MiniLM-L-6-v2 and its kind: one label, a relevance score),
`Classifier` labels texts through the checkpoint's id2label. Both are BertForSequenceClassification: the
engine's pooler output, then the classifier layer, then an activation.

    >>> reranker = CrossEncoder.from_pretrained("cross-encoder/ms-marco-MiniLM-L-6-v2")
    >>> reranker.rank("what is a cat?", ["A cat is an animal.", "Paris is in France."], top_k=1)
    [{'corpus_id': 0, 'score': 8.1}]
"""

from __future__ import annotations

import numpy as np
import torch

from minibert.config import read_json
from minibert.encoder import Encoder
from minibert.engine.core import warn_truncated
from minibert.formats.hub import resolve
from minibert.heads import BertForSequenceClassification
from minibert.settings import as_device, as_dtype, check_quantize, max_length_for
from minibert.tokenizer import Tokenizer

# sentence-transformers' CrossEncoder activation functions, by the class path its config.json records; never
# imported from the file's string
ACTIVATIONS = {
    "torch.nn.modules.activation.Sigmoid": torch.sigmoid,
    "torch.nn.modules.linear.Identity": lambda x: x,  # raw logits
    "torch.nn.modules.activation.Tanh": torch.tanh,
}


class SequenceScorer:
    """A BertForSequenceClassification behind the engine: `logits(inputs)` for texts or pairs, in input order,
    each input's logits independent of its batch (within 1e-6 in float32)."""

    def __init__(self, model: BertForSequenceClassification, tokenizer: Tokenizer, *, max_length=None, fast=True):
        # BERT's classifier reads the pooler's output; its relatives' read the first token's vector
        pooling = "pooler" if model.config.model_type == "bert" else "cls"
        self.encoder = Encoder(model.bert, tokenizer, pooling=pooling, max_length=max_length, fast=fast)
        self.classifier = model.classifier.eval()
        self.config = model.config
        self.num_labels = model.num_labels
        self.labels = [f"LABEL_{i}" for i in range(self.num_labels)]  # a Classifier reads id2label

    @classmethod
    def load(cls, name_or_path, *, device=None, dtype=None, fast=True, quantize=None, **kwargs):
        """A scorer of this class from a checkpoint, refusing one without classifier weights (its scores would
        come from random weights) and one without a pooler where the classifier reads it. `quantize="int8"`:
        the encoder layers compute in 8 bits, calibrated now, as Encoder.from_pretrained's. `kwargs`
        (max_length, and the class's own) go to its constructor."""
        import warnings

        folder = resolve(name_or_path)
        check_quantize(quantize, as_device(device), as_dtype(dtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # newly initialised head weights are refused just below
            model = BertForSequenceClassification.from_pretrained(folder, device=device, dtype=dtype)
        missing = [
            name for name in model.newly_initialized if name.startswith(("classifier", "pre_classifier", "bert.pooler"))
        ]
        if missing:
            raise ValueError(
                f"{folder} has no sequence-classification weights ({', '.join(missing)}): not a cross-encoder "
                "or classifier checkpoint"
            )
        tokenizer = Tokenizer.from_pretrained(folder)
        if quantize:
            from minibert.fast.quantize import quantize_calibrated

            limit = max_length_for(tokenizer, model.config, kwargs.get("max_length"))
            quantize_calibrated(model.bert, tokenizer, limit)
        return cls(model.eval(), tokenizer, fast=fast, **kwargs)

    def logits(self, inputs: list, batch_size: int = 32, show_progress=None) -> torch.Tensor:
        engine = self.encoder.engine
        options = engine.options(batch_size=batch_size)
        encodings, truncated = engine.tokenize(inputs, options)
        logits = self.logits_of(encodings, options, show_progress)
        warn_truncated(truncated, len(inputs), options.max_length, stacklevel=4)
        return logits

    def logits_of(self, encodings: list, options, show_progress=False) -> torch.Tensor:
        """(N, num_labels) float32 logits of inputs already tokenized by the engine."""
        pooled = self.encoder.engine.embed(encodings, options, show_progress)  # (N, H): pooler, or first token
        with torch.inference_mode():
            dtype = next(self.classifier.parameters()).dtype
            return self.classifier(pooled.to(dtype)).float()  # (N, num_labels)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as this model's scores (its activation)."""
        raise NotImplementedError


class CrossEncoder(SequenceScorer):
    """Scores (query, document) pairs, read as BERT pairs: [CLS] query [SEP] document [SEP], the document's
    token type 1, the longer text cut first past the model's length. The activation is the checkpoint's own
    (sentence-transformers' config.json entry), else sigmoid for one label, as sentence-transformers does."""

    def __init__(self, model, tokenizer, *, max_length=None, fast=True, activation=None):
        super().__init__(model, tokenizer, max_length=max_length, fast=fast)
        self.activation = activation or (torch.sigmoid if self.num_labels == 1 else _identity)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return self.activation(logits)

    @classmethod
    def from_pretrained(cls, name_or_path, **options) -> CrossEncoder:
        """A cross-encoder folder, with the activation its sentence-transformers metadata records. `options`
        are SequenceScorer.load's: device, dtype, fast, quantize, max_length."""
        folder = resolve(name_or_path)
        return cls.load(folder, activation=crossencoder_activation(folder), **options)

    def predict(self, pairs, batch_size: int = 32, activation: bool = True, show_progress=None) -> np.ndarray:
        """Each pair's score, (N,) for one label or (N, labels), float32, in input order; `activation=False`
        gives the raw logits. One pair (a tuple) gives its score alone."""
        single = isinstance(pairs, tuple)
        pairs = [pairs] if single else list(pairs)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise TypeError(f"pairs[{i}] must be a (query, document) pair of strings, got {pair!r:.60}")
        logits = self.logits(pairs, batch_size, show_progress)
        scores = self.scores(logits) if activation else logits
        scores = scores.squeeze(-1) if scores.shape[-1] == 1 else scores
        out = scores.cpu().numpy()
        return out[0] if single else out

    def rank(self, query: str, documents, top_k: int | None = None, return_documents: bool = False, **kwargs):
        """The documents by score for `query`, best first: [{"corpus_id", "score"(, "text")}], the first
        `top_k` of them (all by default), as sentence-transformers' CrossEncoder.rank."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        documents = list(documents)
        if not documents:
            raise ValueError("rank needs at least one document")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        scores = self.predict([(query, d) for d in documents], **kwargs)
        if scores.ndim != 1:
            raise ValueError(f"rank needs one score per pair; this model gives {scores.shape[1]} labels")
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [
            {"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
            for i in order
        ]


class Classifier(SequenceScorer):
    """Labels texts with a sequence-classification checkpoint: a softmax over its labels, or a sigmoid per
    label where its config says multi_label_classification; label names from its id2label."""

    def __init__(self, model, tokenizer, *, max_length=None, fast=True, labels=None, multi_label=False):
        super().__init__(model, tokenizer, max_length=max_length, fast=fast)
        self.labels = labels or self.labels
        self.multi_label = multi_label

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """A softmax over the labels, or a sigmoid per label for a multi-label classifier."""
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1)

    @classmethod
    def from_pretrained(cls, name_or_path, **options) -> Classifier:
        """A classifier folder, labelled by its config's id2label, multi-label where its problem_type says so.
        `options` are SequenceScorer.load's: device, dtype, fast, quantize, max_length."""
        folder = resolve(name_or_path)
        values = read_json(folder / "config.json")
        id2label = values.get("id2label") or {}
        labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))] or None
        multi = values.get("problem_type") == "multi_label_classification"
        scorer = cls.load(folder, labels=labels, multi_label=multi, **options)
        if scorer.labels and len(scorer.labels) != scorer.num_labels:
            raise ValueError(
                f"{folder / 'config.json'}: id2label names {len(scorer.labels)} labels, the classifier has "
                f"{scorer.num_labels}"
            )
        return scorer

    def predict(self, texts, top_k: int | None = 1, batch_size: int = 32, show_progress=None):
        """Per text, its labels by score, best first: [{"label", "score"}] (the first `top_k`; None: all).
        One text (a string) gives its list alone."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        logits = self.logits(texts, batch_size, show_progress)
        scores = self.scores(logits).cpu().numpy()
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([{"label": self.labels[i], "score": float(row[i])} for i in order])
        return out[0] if single else out


def _identity(x):
    return x


def crossencoder_activation(folder):
    """The activation a sentence-transformers CrossEncoder folder records: `activation_fn` in
    config_sentence_transformers.json (sentence-transformers 6), in config.json's `sentence_transformers`
    entry (4 and 5), or its `sbert_ce_default_activation_function` (before); None where none is recorded."""
    found = None
    st_file = folder / "config_sentence_transformers.json"
    if st_file.is_file():
        found = (st_file, read_json(st_file).get("activation_fn"))
    if not (found and found[1]):
        values = read_json(folder / "config.json")
        path = (values.get("sentence_transformers") or {}).get("activation_fn")
        found = (folder / "config.json", path or values.get("sbert_ce_default_activation_function"))
    where, path = found
    if path is None:
        return None
    if path not in ACTIVATIONS:
        raise ValueError(f"{where}: activation {path!r} is not one minibert knows ({', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[path]
