"""Checkpoint names: the one place Hugging Face's keys (inherited from Google's TensorFlow scopes) meet
minibert's parameter names, for the encoder and for the heads. Torch-free: the loader, the converter,
the int8 format, the numpy specification and the numpy encoder all read it.

The shape each weight must have comes from the config (BertConfig.weight_shapes), under minibert's names;
`hf_shapes` gives it under Hugging Face's.
"""

from __future__ import annotations

import re

# Hugging Face name (after the `bert.` prefix is dropped) -> minibert name. {} stands for a layer index.
WEIGHT_MAP = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "layers.{}.attention.query.weight",
    "encoder.layer.{}.attention.self.query.bias": "layers.{}.attention.query.bias",
    "encoder.layer.{}.attention.self.key.weight": "layers.{}.attention.key.weight",
    "encoder.layer.{}.attention.self.key.bias": "layers.{}.attention.key.bias",
    "encoder.layer.{}.attention.self.value.weight": "layers.{}.attention.value.weight",
    "encoder.layer.{}.attention.self.value.bias": "layers.{}.attention.value.bias",
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attention.output.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attention.output.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "layers.{}.attention_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "layers.{}.attention_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
    "pooler.dense.weight": "pooler.dense.weight",
    "pooler.dense.bias": "pooler.dense.bias",
}

# MPNet's names for the same parameters (transformers' MPNetModel), and its relative-position bias.
MPNET_MAP = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.attn.q.weight": "layers.{}.attention.query.weight",
    "encoder.layer.{}.attention.attn.q.bias": "layers.{}.attention.query.bias",
    "encoder.layer.{}.attention.attn.k.weight": "layers.{}.attention.key.weight",
    "encoder.layer.{}.attention.attn.k.bias": "layers.{}.attention.key.bias",
    "encoder.layer.{}.attention.attn.v.weight": "layers.{}.attention.value.weight",
    "encoder.layer.{}.attention.attn.v.bias": "layers.{}.attention.value.bias",
    "encoder.layer.{}.attention.attn.o.weight": "layers.{}.attention.output.weight",
    "encoder.layer.{}.attention.attn.o.bias": "layers.{}.attention.output.bias",
    "encoder.layer.{}.attention.LayerNorm.weight": "layers.{}.attention_norm.weight",
    "encoder.layer.{}.attention.LayerNorm.bias": "layers.{}.attention_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
    "encoder.relative_attention_bias.weight": "relative_attention_bias.weight",
    "pooler.dense.weight": "pooler.dense.weight",
    "pooler.dense.bias": "pooler.dense.bias",
}

# DistilBERT's names (transformers' DistilBertModel): no token types, no pooler.
DISTILBERT_MAP = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    **{
        f"transformer.layer.{{}}.{theirs}.{kind}": f"layers.{{}}.{ours}.{kind}"
        for theirs, ours in (
            ("attention.q_lin", "attention.query"),
            ("attention.k_lin", "attention.key"),
            ("attention.v_lin", "attention.value"),
            ("attention.out_lin", "attention.output"),
            ("sa_layer_norm", "attention_norm"),
            ("ffn.lin1", "ffn.up"),
            ("ffn.lin2", "ffn.down"),
            ("output_layer_norm", "ffn_norm"),
        )
        for kind in ("weight", "bias")
    },
}

# ELECTRA's: BERT's, and the projection from its smaller embeddings to the layers' width.
ELECTRA_MAP = {
    **WEIGHT_MAP,
    "embeddings_project.weight": "embeddings.project.weight",
    "embeddings_project.bias": "embeddings.project.bias",
}

# Each family's map and the prefix its task checkpoints put before the encoder's keys (RobertaForMaskedLM
# saves roberta.encoder..., MPNetForMaskedLM mpnet.encoder...). RoBERTa's family keeps BERT's names.
FAMILY_MAPS = {
    "bert": (WEIGHT_MAP, "bert."),
    "roberta": (WEIGHT_MAP, "roberta."),
    "xlm-roberta": (WEIGHT_MAP, "roberta."),
    "camembert": (WEIGHT_MAP, "roberta."),
    "mpnet": (MPNET_MAP, "mpnet."),
    "distilbert": (DISTILBERT_MAP, "distilbert."),
    "electra": (ELECTRA_MAP, "electra."),
}

# Head keys (minibert/heads.py): Hugging Face name -> minibert name.
HEAD_MAP = {
    "cls.predictions.transform.dense.weight": "mlm.transform.weight",
    "cls.predictions.transform.dense.bias": "mlm.transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm.norm.bias",
    "cls.predictions.bias": "mlm.bias",
    "cls.seq_relationship.weight": "nsp.weight",
    "cls.seq_relationship.bias": "nsp.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
    "qa_outputs.weight": "qa_outputs.weight",
    "qa_outputs.bias": "qa_outputs.bias",
}
# The heads of BERT's relatives: Hugging Face name -> minibert name (minibert/heads.py). Sequence
# classification on the first token (FirstTokenClassifier): RoBERTa's family, MPNet and ELECTRA call its two
# layers classifier.dense and classifier.out_proj, DistilBERT pre_classifier and classifier. The masked-LM
# head is BERT's MaskedLMHead under other names (lm_head.*, DistilBERT's vocab_*; its projection is the
# word embeddings, tied); ELECTRA's discriminator has none.
_CLASSIFIER_NAMES = {
    "distilbert": (("pre_classifier", "dense"), ("classifier", "out_proj")),
    "other": (("classifier.dense", "dense"), ("classifier.out_proj", "out_proj")),
}
_MLM_NAMES = {
    "distilbert": (("vocab_transform", "transform"), ("vocab_layer_norm", "norm"), ("vocab_projector", None)),
    "other": (("lm_head.dense", "transform"), ("lm_head.layer_norm", "norm"), ("lm_head", None)),
}
WEIGHT_AND_BIAS = ("weight", "bias")


def _relative_heads(family: str) -> dict:
    kind = "distilbert" if family == "distilbert" else "other"
    names = {
        f"{theirs}.{w}": f"classifier.{ours}.{w}" for theirs, ours in _CLASSIFIER_NAMES[kind] for w in WEIGHT_AND_BIAS
    }
    if family != "electra":
        for theirs, ours in _MLM_NAMES[kind]:
            if ours is None:  # the projection's own bias; its weight is the word embeddings
                names[f"{theirs}.bias"] = "mlm.bias"
            else:
                names |= {f"{theirs}.{w}": f"mlm.{ours}.{w}" for w in WEIGHT_AND_BIAS}
    return names


RELATIVE_HEAD_MAP = {
    f: _relative_heads(f) for f in ("roberta", "xlm-roberta", "camembert", "mpnet", "distilbert", "electra")
}

# Keys of the pretraining heads (cls.: masked LM, next sentence) and the task heads: not the encoder's.
HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.", "lm_head.", "pre_classifier.", "vocab_", "generator_")

# Keys the encoder knowingly leaves alone, with the reason.
IGNORED = {
    r"embeddings\.position_ids": "a buffer holding 0..max_position-1; the forward makes it",
    r"embeddings\.token_type_ids": "a buffer of zeros (ELECTRA, RoBERTa); the forward makes it",
    **{re.escape(prefix) + ".*": "a pretraining or task head, not part of the encoder" for prefix in HEAD_PREFIXES},
}

_PATTERNS = {
    family: {re.compile(re.escape(k).replace(r"\{\}", r"(\d+)") + "$"): v for k, v in mapping.items()}
    for family, (mapping, _) in FAMILY_MAPS.items()
}
_IGNORED = [re.compile(p + "$") for p in IGNORED]


def is_ignored(key: str) -> bool:
    """Whether a normalized key is one the encoder knowingly leaves alone (IGNORED): a head's, or a buffer."""
    return any(p.match(key) for p in _IGNORED)


def normalize_key(key: str, family: str = "bert") -> str:
    """One spelling for the variants real checkpoints use: drop the family's prefix (`bert.`, `roberta.`,
    `mpnet.`), and the legacy `LayerNorm.gamma` / `LayerNorm.beta` of early PyTorch ports become `weight` /
    `bias`."""
    key = key.removeprefix(FAMILY_MAPS[family][1])
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)


def to_minibert_name(key: str, family: str = "bert") -> str | None:
    """The minibert parameter a normalized Hugging Face key fills, or None if it is no encoder weight."""
    for pattern, target in _PATTERNS[family].items():
        m = pattern.match(key)
        if m:
            return target.format(*m.groups())
    return None


def to_hf_name(name: str, family: str = "bert") -> str:
    """The Hugging Face key for a minibert parameter name (the inverse of to_minibert_name)."""
    layer = re.match(r"layers\.(\d+)\.", name)
    for hf, ours in FAMILY_MAPS[family][0].items():
        if layer and ours.format(layer.group(1)) == name:
            return hf.format(layer.group(1))
        if not layer and ours == name:
            return hf
    raise KeyError(f"{name} has no Hugging Face name in the {family} map")


def head_map(family: str = "bert") -> dict:
    """The head keys a family's checkpoints hold: Hugging Face name -> minibert name."""
    return HEAD_MAP if family == "bert" else RELATIVE_HEAD_MAP[family]


def hf_name(name: str, family: str = "bert") -> str:
    """The Hugging Face key of a parameter of a head model (the family's prefix + encoder name, or a head
    name); minibert keeps every family's encoder under `bert.`."""
    if name.startswith("bert."):
        return FAMILY_MAPS[family][1] + to_hf_name(name.removeprefix("bert."), family)
    return {ours: theirs for theirs, ours in head_map(family).items()}[name]


def hf_shapes(config, pooler: bool = True) -> dict[str, tuple[int, ...]]:
    """Every encoder weight's Hugging Face key (without the family's prefix) and the shape `config` gives it."""
    return {to_hf_name(name, config.model_type): shape for name, shape in config.weight_shapes(pooler).items()}
