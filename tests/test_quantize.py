"""int8 quantization (minibert/fast/quantize.py) against the float32 model it was made from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minibert import BertForPreTraining, BertModel, CheckpointError, Encoder
from minibert.fast import cpu, quantize
from minibert.fast.quantize import Int8Linear, calibration_texts, fbgemm_available, int8_available

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no oneDNN int8 kernel")

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "Der Zug fährt um acht Uhr ab.",
    "東京は日本の首都です。",
    "",
    "The committee postponed its decision on the new budget until the spring meeting. " * 8,
]


SENTENCES = Path(__file__).parents[1] / "scripts" / "data" / "sentiment_test.tsv"  # 86 short reviews


def rows_cosine(a, b):
    return F.cosine_similarity(a, b, dim=-1)


KERNELS = [
    pytest.param("onednn"),
    pytest.param("fbgemm", marks=pytest.mark.skipif(not fbgemm_available(), reason="no FBGEMM int8 kernel")),
]


@pytest.fixture(params=KERNELS)
def int8_kernel(request, monkeypatch):
    """Run the test with each int8 kernel that this machine has (minibert.fast.cpu.int8_kernel chooses by
    rows), and check that it is the one that ran."""
    kernel, asked = request.param, []
    monkeypatch.setattr(quantize, "int8_kernel", lambda rows, gelu=False: asked.append(rows) or kernel)
    with cpu.override(fbgemm_int8=kernel == "fbgemm"):
        yield kernel
    assert asked, "no int8 product asked which kernel to run"


def test_int8_kernel_is_chosen_by_rows():
    with cpu.override(fbgemm_int8=True, fused_gelu=True):
        assert cpu.int8_kernel(1) == cpu.int8_kernel(cpu.INT8_FBGEMM_MAX_ROWS) == "fbgemm"
        assert cpu.int8_kernel(cpu.INT8_FBGEMM_MAX_ROWS + 1) == "onednn"
        assert cpu.int8_kernel(cpu.INT8_FBGEMM_MAX_ROWS_GELU, gelu=True) == "fbgemm"
        assert cpu.int8_kernel(cpu.INT8_FBGEMM_MAX_ROWS_GELU + 1, gelu=True) == "onednn"  # oneDNN fuses the GELU
        with cpu.override(fused_gelu=False):  # it would not: FBGEMM up to the common limit
            assert cpu.int8_kernel(cpu.INT8_FBGEMM_MAX_ROWS, gelu=True) == "fbgemm"
    with cpu.override(fbgemm_int8=False):
        assert cpu.int8_kernel(1) == "onednn"


def test_int8_linear_tracks_the_float_layer(int8_kernel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    x = torch.randn(5, 7, 64)
    with torch.inference_mode():
        for gelu in (False, True):
            expected = F.gelu(linear(x)) if gelu else linear(x)
            got = Int8Linear(linear, gelu=gelu)(x)
            assert got.shape == (5, 7, 96) and got.dtype == torch.float32
            assert rows_cosine(got, expected).min() > 0.999
            assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_int8_kernels_agree_on_a_layer():
    """FBGEMM and oneDNN multiply the same int8 weights; their activation quantization differs only in rounding."""
    if not fbgemm_available():
        pytest.skip("this torch build has no FBGEMM int8 kernel")
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    x = torch.randn(9, 384)
    with torch.inference_mode():
        layer = Int8Linear(linear, x.abs().amax(0), gelu=True)
        got = {}
        for fbgemm in (False, True):
            with cpu.override(fbgemm_int8=fbgemm):
                got[fbgemm] = layer(x)
    assert rows_cosine(got[True], got[False]).min() > 0.9999
    assert (got[True] - got[False]).abs().max() < 0.01 * got[False].abs().max()


def test_smoothing_rescues_an_outlier_channel():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 64)
    x = torch.randn(256, 64)
    x[:, 3] *= 80  # one channel far larger than the rest, as BERT's activations have
    expected = linear(x).detach()
    with torch.inference_mode():
        plain = Int8Linear(linear)(x)
        smoothed = Int8Linear(linear, input_absmax=x.abs().amax(0))(x)
    plain_error = (plain - expected).abs().mean()
    smoothed_error = (smoothed - expected).abs().mean()
    assert smoothed_error < plain_error / 3, (plain_error, smoothed_error)
    assert rows_cosine(smoothed, expected).min() > 0.99


def test_int8_encoder_stays_close_to_float32(minilm_dir, int8_kernel):
    float32 = Encoder.from_pretrained(minilm_dir)
    int8 = Encoder.from_pretrained(minilm_dir, quantize="int8")
    assert isinstance(int8.model.layers[0].ffn.down, Int8Linear)
    assert isinstance(int8.model.layers[0].attention.query, Int8Linear)
    texts = TEXTS + [line.split("\t", 1)[1] for line in SENTENCES.read_text().splitlines()[1:]]
    ref, got = float32.encode(texts), int8.encode(texts)
    assert got.shape == ref.shape and got.dtype == np.float32
    cosine = (ref * got).sum(1)  # both normalized
    # measured: mean 0.994; the lowest, 0.978, is the empty text ([CLS] [SEP] alone)
    assert cosine.min() > 0.97 and cosine.mean() > 0.99, (cosine.min(), cosine.mean())
    iu = np.triu_indices(len(texts), 1)  # Spearman of the 4,656 pairwise similarities
    a, b = (ref @ ref.T)[iu], (got @ got.T)[iu]
    rank = lambda v: v.argsort().argsort()  # noqa: E731
    assert np.corrcoef(rank(a), rank(b))[0, 1] > 0.99
    # Unlike float32, a text's int8 vector depends on its batch: the activation range is the batch's.
    alone = int8.encode(TEXTS[0])  # measured: cosine 0.995 to the same text among the others
    assert float(alone @ got[0]) > 0.99 and float(alone @ ref[0]) > 0.99


def test_fused_int8_layers_run_query_key_value_as_one_product(minilm_dir):
    """quantize_int8 smooths query, key and value alike, so Encoder's fused layers run them as one FBGEMM
    product on few rows; the vectors are those of the layers run one by one."""
    from minibert.fast.onednn import FusedLayer

    if not fbgemm_available():
        pytest.skip("this torch build has no FBGEMM int8 kernel")
    fused = Encoder.from_pretrained(minilm_dir, quantize="int8")
    apart = Encoder.from_pretrained(minilm_dir, quantize="int8", fast=False)
    attention = apart.model.layers[0].attention
    assert torch.equal(attention.query.inverse_smooth, attention.value.inverse_smooth)
    assert all(type(layer) is FusedLayer for layer in fused.model.layers)
    with cpu.override(fbgemm_int8=True):
        got, expected = fused.encode(TEXTS[:8], batch_size=8), apart.encode(TEXTS[:8], batch_size=8)
    assert all(isinstance(layer._int8_qkv, tuple) for layer in fused.model.layers)  # stacked, and used
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_int8_refuses_what_it_cannot_do(minilm_dir):
    with pytest.raises(ValueError, match="quantize must be None or 'int8', got 'int4'"):
        Encoder.from_pretrained(minilm_dir, quantize="int4")
    with pytest.raises(ValueError, match="CPU in float32"):
        Encoder.from_pretrained(minilm_dir, quantize="int8", dtype=torch.bfloat16)
    layer = Int8Linear(torch.nn.Linear(8, 8))
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(layer)


def test_calibration_texts_are_fixed_and_span_the_lengths():
    vocab = {w: i for i, w in enumerate(["[CLS]", "[SEP]", "##ing", "walk", "talk", "red", "3", "blue"])}
    texts = calibration_texts(vocab, max_words=256)
    assert texts == calibration_texts(vocab, max_words=256)
    assert len(texts) == 128
    counts = [len(t.split()) for t in texts]
    assert min(counts) >= 2 and max(counts) == 256 and np.median(counts) > 20
    assert set(" ".join(texts).split()) <= {"walk", "talk", "red", "blue"}
    with pytest.raises(ValueError, match="no whole words"):
        calibration_texts({"[CLS]": 0, "##s": 1}, max_words=16)


def test_an_int8_model_saved_once_loads_without_calibration_and_gives_the_same_vectors(
    minilm_dir, tmp_path, monkeypatch
):
    import minibert.fast.quantize as quantize

    texts = TEXTS + [f"sentence {i} about the town and the river " * (1 + i % 5) for i in range(30)]
    in_memory = Encoder.from_pretrained(minilm_dir, quantize="int8")
    in_memory.save_pretrained(tmp_path / "int8")
    files = sorted(p.name for p in (tmp_path / "int8").iterdir())
    assert {"config.json", "model.int8.safetensors", "modules.json", "1_Pooling", "tokenizer.json"} <= set(files)
    assert "model.safetensors" not in files  # a name transformers would load as float weights
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization"]["method"] == "minibert-int8" and config["architectures"] == ["MinibertInt8Model"]

    def no_calibration(*args, **kwargs):
        raise AssertionError("a saved int8 model must not be calibrated again")

    monkeypatch.setattr(quantize, "calibration_batches", no_calibration)
    monkeypatch.setattr(quantize, "linear_input_absmax", no_calibration)
    saved = Encoder.from_pretrained(tmp_path / "int8")
    assert isinstance(saved.model.layers[2].attention.key, Int8Linear)
    assert (saved.pooling, saved.normalize, saved.max_length) == (in_memory.pooling, in_memory.normalize, 256)
    assert saved.encode(texts).tobytes() == in_memory.encode(texts).tobytes()  # bit for bit, same machine
    with pytest.raises(ValueError, match="int8 model, which runs on CPU in float32"):
        Encoder.from_pretrained(tmp_path / "int8", dtype=torch.bfloat16)
    with pytest.raises(FileExistsError, match="is not empty"):
        in_memory.save_pretrained(tmp_path / "int8")


def test_a_saved_int8_model_on_a_cpu_without_vnni(minilm_dir, tmp_path):
    from minibert.fast import cpu

    with cpu.override(vnni=True):  # saved where 8-bit weights are safe
        Encoder.from_pretrained(minilm_dir, quantize="int8").save_pretrained(tmp_path / "int8")
    reference = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    with cpu.override(vnni=False):  # loaded where they would saturate: kept to 7 bits
        saved = Encoder.from_pretrained(tmp_path / "int8")
        assert saved.model.layers[0].ffn.up.weight_max == 63
        got = saved.encode(TEXTS)
    cosine = (got * reference).sum(1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.99, cosine


def test_quantize_command(minilm_dir, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "minibert", "quantize", str(minilm_dir), str(tmp_path / "q")],
        capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert b"minibert: wrote" in result.stderr and b"int8" in result.stderr
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(TEXTS[:4]) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minibert",
            "embed",
            "--model",
            str(tmp_path / "q"),
            str(texts),
            "-o",
            str(tmp_path / "v.npy"),
        ],
        capture_output=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    expected = Encoder.from_pretrained(tmp_path / "q").encode(TEXTS[:4])
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), expected)


# --- a saved int8 folder is checked like a float one, and mistaken for one by nothing ---------------------


@pytest.fixture(scope="module")
def int8_folder(minilm_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8") / "model"
    Encoder.from_pretrained(minilm_dir, quantize="int8").save_pretrained(folder)
    return folder


def _tampered(int8_folder, tmp_path, change_tensors=None, change_config=None):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "tampered"
    shutil.copytree(int8_folder, folder)
    if change_tensors:
        tensors = load_file(folder / "model.int8.safetensors")
        change_tensors(tensors)
        save_file(tensors, folder / "model.int8.safetensors")
    if change_config:
        config = json.loads((folder / "config.json").read_text())
        change_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


SCALE = "encoder.layer.2.attention.self.key.weight_scale"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t[SCALE].neg_(), rf"{SCALE} holds -[0-9.e-]+; scales must be finite and positive"),
        (lambda t: t[SCALE].zero_(), rf"{SCALE} holds 0\.0; scales must be finite and positive"),
        (lambda t: t[SCALE].__setitem__(3, float("nan")), rf"{SCALE} holds nan"),
        (lambda t: t.__setitem__(SCALE, t[SCALE][:100]), rf"{SCALE} has shape \(100,\); the weight needs \(384,\)"),
        (lambda t: t.__setitem__(SCALE, t[SCALE].to(torch.int32)), rf"{SCALE} has dtype torch.int32; scales are"),
        (
            lambda t: t.pop("encoder.layer.0.output.dense.input_scale"),
            r"layer 'encoder\.layer\.0\.output\.dense' lacks",
        ),
    ],
)
def test_a_tampered_int8_folder_is_refused_by_key(int8_folder, tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message):
        Encoder.from_pretrained(_tampered(int8_folder, tmp_path, change_tensors=change))


@pytest.mark.parametrize("weight_max", [255, "127", None, True])
def test_a_tampered_int8_config_is_refused_by_key(int8_folder, tmp_path, weight_max):
    folder = _tampered(int8_folder, tmp_path, change_config=lambda c: c["quantization"].update(weight_max=weight_max))
    with pytest.raises(CheckpointError, match=r"quantization\.weight_max is .*; it must be 63 or 127"):
        Encoder.from_pretrained(folder)


def test_an_int8_folder_is_not_mistaken_for_a_float_checkpoint(int8_folder, capsys):
    import transformers

    with pytest.raises(OSError, match="model.safetensors|pytorch_model.bin"):
        transformers.BertModel.from_pretrained(int8_folder)
    for load in (BertModel.from_pretrained, BertForPreTraining.from_pretrained):
        with pytest.raises(CheckpointError, match="holds an int8 model .* load it with Encoder.from_pretrained"):
            load(int8_folder)
    from minibert.cli import main

    for command in (
        ["inspect", "hi"],
        ["dump", "hi", "-o", str(int8_folder.parent / "d.safetensors")],
        ["parity"],
        ["convert", str(int8_folder), str(int8_folder.parent / "c")],
    ):
        args = command[:1] + ["--model", str(int8_folder)] + command[1:] if command[0] != "convert" else command
        assert main(args) == 2
        assert "holds an int8 model" in capsys.readouterr().err, command
