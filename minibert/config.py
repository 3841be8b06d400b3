"""BertConfig: the hyper-parameters of a BERT encoder, read from `config.json` or `bert_config.json`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

# Far beyond any BERT (bert-large has 3.4e8): a larger config is a typo, and would fail deep in torch.
MAX_PARAMETERS = 10**11

# Fields a config file must give: they fix the shape of every weight, and a default would only turn a
# missing field into a confusing shape mismatch later.
REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

# The model types minibert reads, and the architecture class transformers builds for each (what a saved
# config.json names). BERT's relatives differ from it by small deltas (minibert/relatives.py): RoBERTa,
# XLM-R and CamemBERT count positions from the padding id; MPNet also adds a relative-position bias to
# every layer's attention scores and has no token types.
MODEL_TYPES = {
    "bert": "BertModel",
    "roberta": "RobertaModel",
    "xlm-roberta": "XLMRobertaModel",
    "camembert": "CamembertModel",
    "mpnet": "MPNetModel",
    "distilbert": "DistilBertModel",
    "electra": "ElectraModel",
}
# Families whose positions count from padding_idx + 1 over real tokens (padding_idx is the pad id).
PADDED_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")
# Families without a segment (token type) embedding.
NO_TOKEN_TYPES = ("mpnet", "distilbert")
# DistilBERT's config.json names for BERT's fields.
DISTILBERT_NAMES = {
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob",
}

# Activations the feed-forward block implements (see ACTIVATIONS in model.py).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


def read_json(path: str | os.PathLike):
    """The JSON value in `path`; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclass
class BertConfig:
    """Field names are those of a Hugging Face `config.json`; Google's `bert_config.json` uses the same ones.

    Defaults are bert-base-uncased.
    """

    vocab_size: int = 30522  # number of wordpiece ids
    hidden_size: int = 768  # H, width of every token vector
    num_hidden_layers: int = 12  # number of transformer layers
    num_attention_heads: int = 12  # N, heads per attention layer; head size D = H / N
    intermediate_size: int = 3072  # width of the feed-forward block's hidden layer (4H)
    hidden_act: str = "gelu"  # feed-forward activation; "gelu" is the exact erf form
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each sub-layer's output
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention probabilities
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # number of segment (token type) ids: sentence A / sentence B
    initializer_range: float = 0.02  # std of the normal init for fresh weights
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon the checkpoints were trained with
    pad_token_id: int = 0  # id of [PAD]
    position_embedding_type: str = "absolute"  # only learned absolute positions exist in BERT
    model_type: str = "bert"  # the family: a key of MODEL_TYPES
    relative_attention_num_buckets: int = 32  # MPNet: buckets of its relative-position bias (others: unused)
    embedding_size: int | None = None  # ELECTRA: the embeddings' width, projected to hidden_size (None: the same)

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "relative_attention_num_buckets",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        size = self.embedding_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"embedding_size must be a positive integer, got {size!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not implemented; supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not one minibert knows; it reads {', '.join(MODEL_TYPES)}"
            )
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type {self.position_embedding_type!r} is not supported; "
                "minibert implements BERT's learned absolute positions only"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if self.pad_token_id is not None:
            if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int):
                raise ValueError(f"pad_token_id must be an integer, got {self.pad_token_id!r}")
            if not 0 <= self.pad_token_id < self.vocab_size:
                raise ValueError(f"pad_token_id {self.pad_token_id} is outside [0, vocab_size {self.vocab_size})")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(
                f"this config describes {self.parameter_count():.3g} parameters (hidden_size "
                f"{self.hidden_size}, intermediate_size {self.intermediate_size}, vocab_size "
                f"{self.vocab_size}), more than the {MAX_PARAMETERS:.0e} minibert will build"
            )

    def weight_shapes(self, pooler: bool = True) -> dict[str, tuple[int, ...]]:
        """Every parameter of BertModel with this config, under minibert's names, in the model's order, with
        the shape this config gives it: what a checkpoint must hold (minibert/formats/names.py maps the
        names to Hugging Face's). tests/test_config.py holds it to BertModel's own state dict."""
        H, I = self.hidden_size, self.intermediate_size
        shapes = {
            "embeddings.word_embeddings.weight": (self.vocab_size, H),
            "embeddings.position_embeddings.weight": (self.max_position_embeddings, H),
            "embeddings.token_type_embeddings.weight": (self.type_vocab_size, H),
            "embeddings.norm.weight": (H,),
            "embeddings.norm.bias": (H,),
        }
        if not self.has_token_types:
            del shapes["embeddings.token_type_embeddings.weight"]
        E = self.embedding_size or H
        if E != H:  # ELECTRA's small embeddings, then a projection up to the layers' width
            shapes = {name: shape[:-1] + (E,) for name, shape in shapes.items()}
            shapes |= {"embeddings.project.weight": (H, E), "embeddings.project.bias": (H,)}
        linear = {
            "attention.query": (H, H),
            "attention.key": (H, H),
            "attention.value": (H, H),
            "attention.output": (H, H),
            "attention_norm": (H,),
            "ffn.up": (I, H),
            "ffn.down": (H, I),
            "ffn_norm": (H,),
        }
        for i in range(self.num_hidden_layers):
            for name, shape in linear.items():  # a Linear's weight is (out, in); a LayerNorm's is (H,)
                shapes[f"layers.{i}.{name}.weight"] = shape
                shapes[f"layers.{i}.{name}.bias"] = shape[:1]
        if self.model_type == "mpnet":  # one bias per head for each bucket of relative positions
            shapes["relative_attention_bias.weight"] = (self.relative_attention_num_buckets, self.num_attention_heads)
        if pooler:
            shapes |= {"pooler.dense.weight": (H, H), "pooler.dense.bias": (H,)}
        return shapes

    @property
    def max_input_length(self) -> int:
        """The longest input the position table covers: max_position_embeddings, less the pad id + 1 where
        positions count from there (RoBERTa's 514 positions take 512 tokens)."""
        offset = self.pad_token_id + 1 if self.model_type in PADDED_POSITIONS else 0
        return self.max_position_embeddings - offset

    @property
    def has_token_types(self) -> bool:
        """Whether the model adds a segment (token type) embedding: MPNet and DistilBERT have none."""
        return self.model_type not in NO_TOKEN_TYPES

    def parameter_count(self, pooler: bool = True) -> int:
        """Parameters of BertModel with this config: embeddings, layers, and the pooler if `pooler`."""
        return sum(math.prod(shape) for shape in self.weight_shapes(pooler).values())

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> BertConfig:
        """Build from a config dict; keys that are not fields are ignored."""
        model_type = values.get("model_type", "bert")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not one minibert knows; it reads {', '.join(MODEL_TYPES)}"
            )
        if model_type == "distilbert":
            if values.get("sinusoidal_pos_embds"):
                raise ValueError(f"{source}: sinusoidal position embeddings are not supported (learned ones are)")
            values = {DISTILBERT_NAMES.get(k, k): v for k, v in values.items()}
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in REQUIRED if name not in values]
        if missing:
            raise ValueError(
                f"{source}: missing field {missing[0]!r}"
                + (f" (and {', '.join(missing[1:])})" if len(missing) > 1 else "")
            )
        kwargs = {k: v for k, v in values.items() if k in fields}
        if kwargs.get("layer_norm_eps") is None:  # bert_config.json has no such key
            kwargs.pop("layer_norm_eps", None)
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BertConfig:
        """Read a Hugging Face `config.json` or Google's `bert_config.json`."""
        values = read_json(path)
        if not isinstance(values, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return cls.from_dict(values, source=str(path))

    def to_dict(self, architecture: str | None = None, **extra) -> dict:
        """The `config.json` that Hugging Face `transformers` reads as this family's config; the architecture
        defaults to the family's base model (BertModel, RobertaModel, MPNetModel, ...)."""
        values = dataclasses.asdict(self)
        if self.model_type != "mpnet":
            values.pop("relative_attention_num_buckets")
        if self.embedding_size is None:
            values.pop("embedding_size")
        if self.model_type == "distilbert":  # its own names, which transformers' DistilBertConfig reads
            values = {({v: k for k, v in DISTILBERT_NAMES.items()}).get(k, k): v for k, v in values.items()}
        return {"architectures": [architecture or MODEL_TYPES[self.model_type]], **values, **extra}

    def save_json(self, path: str | os.PathLike, architecture: str | None = None, **extra) -> None:
        from minibert.formats.atomic import write_text

        write_text(path, json.dumps(self.to_dict(architecture, **extra), indent=2, sort_keys=True) + "\n")
