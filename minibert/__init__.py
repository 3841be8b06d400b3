"""minibert: a readable BERT encoder in PyTorch that matches the reference implementation.

`import minibert` stays light: torch and tokenizers load when a class that needs them is first used.
"""

__version__ = "0.1.0"

from minibert.config import BertConfig

__all__ = [
    "BertConfig",
    "BertModel",
    "EncoderOutput",
    "CheckpointError",
    "Encoder",
    "NumpyEncoder",
    "Tokenizer",
    "similarity",
    "fill_mask",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "default_model",
    "read_vectors",
    "semantic_search",
    "CrossEncoder",
    "Classifier",
    "SparseEncoder",
    "__version__",
]

_LAZY = {
    "BertModel": "minibert.model",
    "EncoderOutput": "minibert.model",
    "CheckpointError": "minibert.formats.errors",
    "Tokenizer": "minibert.tokenizer",
    "Encoder": "minibert.encoder",
    "NumpyEncoder": "minibert.numpy_encoder",
    "default_model": "minibert.formats.hub",
    "read_vectors": "minibert.corpus.shards",
    "semantic_search": "minibert.search",
    "CrossEncoder": "minibert.classify",
    "Classifier": "minibert.classify",
    "SparseEncoder": "minibert.sparse",
    "similarity": "minibert.encoder",
    "fill_mask": "minibert.heads",
    "BertForMaskedLM": "minibert.heads",
    "BertForNextSentencePrediction": "minibert.heads",
    "BertForPreTraining": "minibert.heads",
    "BertForSequenceClassification": "minibert.heads",
    "BertForTokenClassification": "minibert.heads",
    "BertForQuestionAnswering": "minibert.heads",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minibert' has no attribute {name!r}")
