"""Google TensorFlow checkpoints, read without TensorFlow.

The fixture in tests/data/uncased_L-2_H-32_A-4 was written by real TensorFlow (scripts/make_tf_fixture.py):
a tensor bundle in the layout of Google's BERT release, optimiser slots included, and variables.npz with
every variable as TensorFlow read it back.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from reference import assert_outputs_match

from minibert import BertModel, CheckpointError, Tokenizer
from minibert.formats.convert import convert
from minibert.formats.tf_checkpoint import TFCheckpoint, TFCheckpointError, crc32c, google_to_hf, mask_crc

FIXTURE = Path(__file__).parent / "data" / "uncased_L-2_H-32_A-4"


@pytest.fixture(scope="module")
def npz():
    return dict(np.load(FIXTURE / "variables.npz"))


@pytest.fixture
def copy(tmp_path):
    """A private copy of the fixture folder, to corrupt."""
    folder = tmp_path / "uncased_L-2_H-32_A-4"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C (Castagnoli)
    assert crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (1, 63, 1000, 262_144, 1_000_003):  # both the byte loop and the lane-parallel path
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        crc = 0xFFFFFFFF
        for byte in data[:5000]:  # a bit-at-a-time reference on a prefix
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        assert crc32c(data[:5000]) == crc ^ 0xFFFFFFFF
        assert crc32c(data) == crc32c(np.frombuffer(data, dtype=np.uint8), lanes=7)


def test_every_tensor_equals_what_tensorflow_read(npz):
    ckpt = TFCheckpoint(FIXTURE / "bert_model.ckpt")
    assert sorted(ckpt.names()) == sorted(npz)
    assert any(name.endswith("/adam_m") for name in npz) and "global_step" in npz
    for name, expected in npz.items():
        got = ckpt.read(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def reference_from_npz(npz):
    """transformers.BertForPreTraining holding the fixture's values, mapped here from the HF side:
    each HF parameter name spelled the Google way, dense kernels transposed."""
    import json

    import transformers

    config = transformers.BertConfig(
        **json.loads((FIXTURE / "bert_config.json").read_text()), attn_implementation="eager"
    )
    model = transformers.BertForPreTraining(config).eval()
    special = {
        "cls.predictions.bias": "cls/predictions/output_bias",
        "cls.seq_relationship.weight": "cls/seq_relationship/output_weights",
        "cls.seq_relationship.bias": "cls/seq_relationship/output_bias",
    }
    state = {}
    for key in model.state_dict():
        if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
            continue  # tied to the word embeddings and to cls.predictions.bias
        name = special.get(key) or key.replace(".", "/").replace("layer/", "layer_")
        transpose = name.endswith("/weight") and "embeddings" not in name and "LayerNorm" not in name
        name = name.replace("LayerNorm/weight", "LayerNorm/gamma").replace("LayerNorm/bias", "LayerNorm/beta")
        name = name.replace("/weight", "/kernel") if transpose else name.removesuffix("/weight")
        value = torch.from_numpy(npz[name])
        state[key] = value.T if transpose else value
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"} and not unexpected
    return model


def batch():
    tokenizer = Tokenizer.from_pretrained(FIXTURE)
    return tokenizer(["hello the model, this is bert", "春眠 token text"], ["a pair", "and another one"])


def test_model_matches_transformers_with_the_same_values(npz):
    reference = reference_from_npz(npz)
    model = BertModel.from_pretrained(FIXTURE)
    inputs = batch()
    kwargs = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        assert_outputs_match(model(**inputs, **kwargs), reference.bert(**inputs, **kwargs), inputs["attention_mask"])


def test_pretraining_heads_from_the_tensorflow_checkpoint(npz):
    from minibert import BertForPreTraining

    reference = reference_from_npz(npz)
    model = BertForPreTraining.from_pretrained(FIXTURE)
    assert model.newly_initialized == []
    inputs = batch()
    with torch.no_grad():
        got, want = model(**inputs), reference(**inputs)
    torch.testing.assert_close(got.prediction_logits, want.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.seq_relationship_logits, want.seq_relationship_logits, atol=1e-5, rtol=0)


def test_convert_loads_in_transformers_and_matches(npz, tmp_path):
    import transformers

    out = convert(FIXTURE, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    loaded, info = transformers.BertForPreTraining.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    reference = reference_from_npz(npz)
    inputs = batch()
    with torch.no_grad():
        got, want = loaded.eval()(**inputs), reference(**inputs)
    torch.testing.assert_close(got.prediction_logits, want.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.seq_relationship_logits, want.seq_relationship_logits, atol=1e-5, rtol=0)
    # minibert reads the converted folder too, and tokenizes the same
    with torch.no_grad():
        assert_outputs_match(
            BertModel.from_pretrained(out)(**inputs), reference.bert(**inputs), inputs["attention_mask"]
        )
    hf_tok = transformers.BertTokenizerFast.from_pretrained(out)
    texts = ["Hello THE Model", "春眠 tokens!", ""]
    assert (
        hf_tok(texts, padding=True, return_tensors="pt")["input_ids"].tolist()
        == Tokenizer.from_pretrained(out)(texts)["input_ids"].tolist()
        == Tokenizer.from_pretrained(FIXTURE)(texts)["input_ids"].tolist()
    )


def test_convert_command(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "minibert", "convert", str(FIXTURE), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    result = subprocess.run(
        [sys.executable, "-m", "minibert", "convert", str(tmp_path / "nowhere"), str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "model folder not found" in result.stderr


def test_lowercasing_comes_from_the_folder_name(copy, tmp_path):
    assert Tokenizer.from_pretrained(FIXTURE).tokenize("HELLO") == ["[CLS]", "hello", "[SEP]"]
    plain = tmp_path / "my_bert"
    shutil.copytree(FIXTURE, plain)
    with pytest.raises(ValueError, match="pass lowercase=True or lowercase=False"):
        Tokenizer.from_pretrained(plain)
    assert Tokenizer.from_pretrained(plain, lowercase=False).tokenize("HELLO")[1] == "[UNK]"


def test_flipped_data_byte(copy, npz):
    data = copy / "bert_model.ckpt.data-00000-of-00001"
    ckpt = TFCheckpoint(copy / "bert_model.ckpt")
    entry = ckpt.entry("bert/encoder/layer_1/output/dense/kernel")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 17] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(
        TFCheckpointError,
        match=r"data-00000-of-00001: checksum mismatch for variable "
        r"'bert/encoder/layer_1/output/dense/kernel'",
    ):
        BertModel.from_pretrained(copy)


def test_flipped_index_byte(copy):
    index = copy / "bert_model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[200] ^= 0x40
    index.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match=r"bert_model\.ckpt\.index: (checksum mismatch in the block|corrupt)"):
        BertModel.from_pretrained(copy)


@pytest.mark.parametrize("keep", [0, 30, 1000, -1])
def test_truncated_index(copy, keep):
    index = copy / "bert_model.ckpt.index"
    raw = index.read_bytes()
    index.write_bytes(raw[:keep])
    with pytest.raises(TFCheckpointError, match=r"bert_model\.ckpt\.index: (truncated|not a TensorFlow)"):
        BertModel.from_pretrained(copy)


def test_truncated_data(copy):
    data = copy / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(TFCheckpointError, match=r"data-00000-of-00001: truncated: variable"):
        BertModel.from_pretrained(copy)


def test_missing_data_file(copy):
    (copy / "bert_model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match=r"bert_model\.ckpt\.data-00000-of-00001"):
        BertModel.from_pretrained(copy)


# --- hand-made bundles, written here from the format's description, for the cases TensorFlow won't write


def varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not out[-1] & 0x80:
            return bytes(out)


def field(number, wire, payload):
    tag = varint(number << 3 | wire)
    if wire == 0:
        return tag + varint(payload)
    if wire == 5:
        return tag + struct.pack("<I", payload)
    return tag + varint(len(payload)) + payload


def block(entries):
    """One block, every entry a restart point (no shared prefixes), with its trailer."""
    body, restarts = b"", []
    for key, value in entries:
        restarts.append(len(body))
        body += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return body + b"\0" + struct.pack("<I", mask_crc(crc32c(body + b"\0")))


def write_bundle(prefix, tensors, *, big_endian=False, dtype_override=None, crc_offset=0, shapes=None):
    """A single-shard bundle of float32 tensors: the index table and the data file. `tensors` is a dict,
    or a list of (name, array) pairs written in that order (names may repeat); `shapes` overrides the
    shape recorded for a name."""
    data, entries = b"", []
    for name, value in sorted(tensors.items()) if isinstance(tensors, dict) else tensors:
        raw = value.astype("<f4").tobytes()
        shape = b"".join(field(2, 2, field(1, 0, d)) for d in (shapes or {}).get(name, value.shape))
        entry = (
            field(1, 0, dtype_override or 1)
            + field(2, 2, shape)
            + field(4, 0, len(data))
            + field(5, 0, len(raw))
            + field(6, 5, (mask_crc(crc32c(raw)) + crc_offset) & 0xFFFFFFFF)
        )
        entries.append((name if isinstance(name, bytes) else name.encode(), entry))
        data += raw
    header = field(1, 0, 1) + (field(2, 0, 1) if big_endian else b"")
    data_block = block([(b"", header)] + entries)
    index_block = block([(entries[-1][0] + b"\xff", varint(0) + varint(len(data_block) - 5))])
    meta_block = block([])
    file = data_block + meta_block + index_block
    meta_handle = varint(len(data_block)) + varint(len(meta_block) - 5)
    index_handle = varint(len(data_block) + len(meta_block)) + varint(len(index_block) - 5)
    footer = (meta_handle + index_handle).ljust(40, b"\0") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(file + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data)


def test_hand_made_bundle_reads(tmp_path):
    tensors = {"a/b": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.ones(4, np.float32)}
    write_bundle(tmp_path / "x.ckpt", tensors)
    ckpt = TFCheckpoint(tmp_path / "x.ckpt")
    for name, value in tensors.items():
        np.testing.assert_array_equal(ckpt.read(name), value)


def test_big_endian_is_refused(tmp_path):
    write_bundle(tmp_path / "x.ckpt", {"a": np.ones(3, np.float32)}, big_endian=True)
    with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: the bundle header says big-endian"):
        TFCheckpoint(tmp_path / "x.ckpt")


def test_unsupported_dtype_names_the_variable(tmp_path):
    write_bundle(tmp_path / "x.ckpt", {"bert/w": np.ones(4, np.float32)}, dtype_override=7)
    with pytest.raises(TFCheckpointError, match=r"variable 'bert/w' has dtype string"):
        TFCheckpoint(tmp_path / "x.ckpt").read("bert/w")


def test_wrong_checksum_names_the_variable(tmp_path):
    write_bundle(tmp_path / "x.ckpt", {"bert/w": np.ones(4, np.float32)}, crc_offset=1)
    with pytest.raises(
        TFCheckpointError,
        match=r"x\.ckpt\.data-00000-of-00001: checksum mismatch for "
        r"variable 'bert/w'",
    ):
        TFCheckpoint(tmp_path / "x.ckpt").read("bert/w")


def test_google_names():
    assert google_to_hf("bert/encoder/layer_11/attention/self/query/kernel") == (
        "bert.encoder.layer.11.attention.self.query.weight",
        True,
    )
    assert google_to_hf("bert/encoder/layer_0/output/LayerNorm/gamma") == (
        "bert.encoder.layer.0.output.LayerNorm.weight",
        False,
    )
    assert google_to_hf("bert/embeddings/word_embeddings") == ("bert.embeddings.word_embeddings.weight", False)
    assert google_to_hf("cls/seq_relationship/output_weights") == ("cls.seq_relationship.weight", False)
    assert google_to_hf("cls/predictions/output_bias") == ("cls.predictions.bias", False)
    for skipped in ("bert/pooler/dense/kernel/adam_m", "global_step", "cls/predictions/output_bias/adam_v"):
        assert google_to_hf(skipped) is None
    with pytest.raises(TFCheckpointError, match="unexpected variable 'optimizer/beta1_power'"):
        google_to_hf("optimizer/beta1_power")


def test_unknown_variable_in_a_checkpoint_is_an_error(tmp_path, copy):
    write_bundle(copy / "bert_model.ckpt", {"bert/encoder/layer_0/attention/self/rotary/kernel": np.ones((2, 2))})
    with pytest.raises(CheckpointError, match=r"unexpected key 'bert\.encoder\.layer\.0\.attention\.self\.rotary"):
        BertModel.from_pretrained(copy)


def test_a_variable_listed_twice_is_refused(tmp_path):
    write_bundle(tmp_path / "x.ckpt", [("bert/w", np.ones(4, np.float32)), ("bert/w", np.zeros(4, np.float32))])
    with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: variable 'bert/w' is listed twice"):
        TFCheckpoint(tmp_path / "x.ckpt")


def test_two_spellings_of_one_layer_are_refused(tmp_path, copy):
    name = "bert/encoder/layer{}0/attention/self/query/bias"
    write_bundle(copy / "bert_model.ckpt", {name.format("/"): np.ones(32), name.format("_"): np.zeros(32)})
    with pytest.raises(
        CheckpointError,
        match=r"variables '.*layer/0.*' and '.*layer_0.*' both map to "
        r"'bert\.encoder\.layer\.0\.attention\.self\.query\.bias'",
    ):
        BertModel.from_pretrained(copy)


def test_a_name_that_is_not_utf8_is_refused(tmp_path):
    write_bundle(tmp_path / "x.ckpt", [(b"bert/\xff\xfe", np.ones(4, np.float32))])
    with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: variable name .* is not UTF-8 text"):
        TFCheckpoint(tmp_path / "x.ckpt")


def test_a_shape_whose_size_overflows_is_refused(tmp_path):
    # 2**62 * 2**2 elements wrap to 0 in int64, and 0 * 4 bytes would match an empty tensor's size
    write_bundle(tmp_path / "x.ckpt", {"bert/w": np.ones(0, np.float32)}, shapes={"bert/w": (2**62, 4)})
    with pytest.raises(TFCheckpointError, match=r"x\.ckpt\.index: variable 'bert/w' has shape"):
        TFCheckpoint(tmp_path / "x.ckpt").read("bert/w")
