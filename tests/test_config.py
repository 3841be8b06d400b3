"""BertConfig: reading both config formats and refusing bad values with the values in the message."""

from __future__ import annotations

import json

import pytest
import torch

from minibert import BertConfig, BertModel

# The bert_config.json of Google's chinese_L-12_H-768_A-12 release (no layer_norm_eps, extra pooler_* keys).
GOOGLE_CHINESE = {
    "attention_probs_dropout_prob": 0.1,
    "directionality": "bidi",
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pooler_fc_size": 768,
    "pooler_num_attention_heads": 12,
    "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 128,
    "pooler_type": "first_token_transform",
    "type_vocab_size": 2,
    "vocab_size": 21128,
}


def write(tmp_path, values, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def test_reads_hugging_face_config(minilm_dir):
    c = BertConfig.from_json(minilm_dir / "config.json")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (384, 6, 12, 1536)
    assert c.layer_norm_eps == 1e-12 and c.hidden_act == "gelu" and c.head_size == 32


def test_reads_google_bert_config(tmp_path):
    c = BertConfig.from_json(write(tmp_path, GOOGLE_CHINESE, "bert_config.json"))
    assert c.vocab_size == 21128 and c.layer_norm_eps == 1e-12 and c.pad_token_id == 0


def test_round_trip_through_transformers(tmp_path):
    import transformers

    ours = BertConfig(
        vocab_size=123,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=6,
        intermediate_size=96,
        layer_norm_eps=1e-7,
    )
    ours.save_json(tmp_path / "config.json")
    theirs = transformers.BertConfig.from_pretrained(tmp_path)
    for field in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "layer_norm_eps",
        "hidden_act",
        "type_vocab_size",
        "max_position_embeddings",
    ):
        assert getattr(theirs, field) == getattr(ours, field), field
    assert BertConfig.from_json(tmp_path / "config.json") == ours


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hidden_size": 768, "num_attention_heads": 7}, "hidden_size 768 is not a multiple of num_attention_heads 7"),
        ({"hidden_act": "swish"}, "hidden_act 'swish' is not implemented"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer, got 0"),
        ({"vocab_size": -5}, "vocab_size must be a positive integer, got -5"),
        ({"intermediate_size": 3072.5}, "intermediate_size must be a positive integer, got 3072.5"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
        ({"hidden_dropout_prob": 1.5}, r"hidden_dropout_prob must be in \[0, 1\), got 1.5"),
        ({"layer_norm_eps": 0}, "layer_norm_eps must be positive, got 0"),
        ({"model_type": "deberta-v2"}, "model_type 'deberta-v2' is not one minibert knows; it reads bert, roberta"),
        ({"pad_token_id": 30522}, r"pad_token_id 30522 is outside \[0, vocab_size 30522\)"),
    ],
)
def test_bad_values_are_refused_with_the_values(tmp_path, change, message):
    path = write(tmp_path, {**GOOGLE_CHINESE, "vocab_size": 30522, **change})
    with pytest.raises(ValueError, match=message) as e:
        BertConfig.from_json(path)
    assert "config.json" in str(e.value)


def test_unknown_keys_are_ignored(tmp_path):
    c = BertConfig.from_json(
        write(
            tmp_path,
            {
                "hidden_size": 64,
                "num_attention_heads": 4,
                "vocab_size": 99,
                "num_hidden_layers": 2,
                "intermediate_size": 37,
                "gradient_checkpointing": 1,
                "use_cache": True,
                "transformers_version": "4.8.2",
            },
        )
    )
    assert c.hidden_size == 64


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        BertConfig.from_json(tmp_path / "nothing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        BertConfig.from_json(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json does not hold a JSON object"):
        BertConfig.from_json(tmp_path / "list.json")


def test_the_config_accepts_exactly_the_activations_the_model_has():
    from minibert.config import SUPPORTED_ACTIVATIONS
    from minibert.model import ACTIVATIONS

    assert set(SUPPORTED_ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("pooler", [True, False])
def test_weight_shapes_are_the_models_own(pooler):
    """BertConfig.weight_shapes is what the loaders and the numpy encoder check checkpoints against: it must
    name every parameter of BertModel, in its order, with its shape."""

    from minibert.model import BertModel

    for config in (
        BertConfig(),
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=24,
            max_position_embeddings=16,
            type_vocab_size=3,
        ),
    ):
        with torch.device("meta"):
            model = BertModel(config, add_pooler=pooler)
        assert config.weight_shapes(pooler) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert list(config.weight_shapes(pooler)) == list(model.state_dict())


@pytest.mark.parametrize(
    "change,match",
    [
        ({"hidden_dropout_prob": "high"}, r"config\.json: hidden_dropout_prob must be a number, got 'high'"),
        ({"layer_norm_eps": "tiny"}, r"config\.json: layer_norm_eps must be a number, got 'tiny'"),
        ({"pad_token_id": "0"}, r"config\.json: pad_token_id must be an integer, got '0'"),
        ({"hidden_size": 10**12, "num_attention_heads": 1}, r"config\.json: this config describes .* parameters"),
        ({"hidden_size": None}, r"config\.json: hidden_size must be a positive integer, got None"),
    ],
)
def test_bad_config_values_name_the_field(tiny_folder, change, match):
    values = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**values, **change}))
    with pytest.raises(ValueError, match=match):
        BertModel.from_pretrained(tiny_folder)


def test_a_config_without_hidden_size_says_so(tiny_folder):
    values = json.loads((tiny_folder / "config.json").read_text())
    del values["hidden_size"]
    (tiny_folder / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=r"config\.json: missing field 'hidden_size'"):
        BertModel.from_pretrained(tiny_folder)
