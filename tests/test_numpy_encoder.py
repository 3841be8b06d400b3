"""The numpy backend: the torch Encoder's vectors from minibert/tools/spec.py, without importing torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from minibert import CheckpointError, Encoder
from minibert.numpy_encoder import NumpyEncoder

TEXTS = [
    "A man is eating food.",
    "A man eats a meal.",
    "",
    "春眠不觉晓，处处闻啼鸟。",
    "The committee met in the spring and decided, after a long and careful debate, to move the market.",
]


@pytest.fixture(scope="module")
def encoders(minilm_dir):
    return Encoder.from_pretrained(minilm_dir), Encoder.from_pretrained(minilm_dir, backend="numpy")


def test_matches_sentence_transformers_and_the_torch_encoder(minilm_dir, encoders):
    from sentence_transformers import SentenceTransformer

    torch_encoder, numpy_encoder = encoders
    assert isinstance(numpy_encoder, NumpyEncoder)
    vectors = numpy_encoder.encode(TEXTS, batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)
    assert np.abs(vectors - reference).max() <= 1e-5
    assert np.abs(vectors - torch_encoder.encode(TEXTS)).max() <= 1e-5
    assert np.abs(numpy_encoder.encode(TEXTS[0]) - torch_encoder.encode(TEXTS[0])).max() <= 1e-5


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len"])
def test_every_pooling_and_truncation_match_the_torch_encoder(encoders, pooling):
    torch_encoder, numpy_encoder = encoders
    options = dict(pooling=pooling, normalize=False, max_length=8)
    with pytest.warns(UserWarning, match="truncated"):
        ours = numpy_encoder.encode(TEXTS, **options)
    with pytest.warns(UserWarning, match="truncated"):
        reference = torch_encoder.encode(TEXTS, **options)
    assert np.abs(ours - reference).max() <= 1e-5 * max(1.0, np.abs(reference).max())


def test_pooler_output_matches_on_a_checkpoint_with_a_pooler(bert_base, minilm_dir, tmp_path):
    folder = tmp_path / "bert-base"
    shutil.copytree(bert_base[0], folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):  # bert-base's own uncased vocabulary
        shutil.copy(minilm_dir / name, folder)
    texts = TEXTS[:2]
    ours = Encoder.from_pretrained(folder, backend="numpy").encode(texts, pooling="pooler")
    reference = Encoder.from_pretrained(folder).encode(texts, pooling="pooler")
    assert np.abs(ours - reference).max() <= 1e-5


def test_the_numpy_path_never_imports_torch(minilm_dir):
    code = (
        "import sys\nfrom minibert.cli import main\n"
        f"sys.argv = ['minibert', 'similarity', '--model', {str(minilm_dir)!r}, 'a cat', 'a dog']\n"
        "main()\nprint('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"


def test_cli_backends_print_the_same_table(minilm_dir):
    tables = {}
    for backend in ("numpy", "torch"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "minibert",
                "similarity",
                "--backend",
                backend,
                "--model",
                str(minilm_dir),
                *TEXTS[:2],
                TEXTS[4],
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        tables[backend] = np.array([[float(x) for x in line.split()[-3:]] for line in result.stdout.splitlines()[1:]])
    assert np.abs(tables["numpy"] - tables["torch"]).max() <= 0.01  # two decimals, one rounding apart at most


def test_bad_weights_are_refused_by_name(minilm_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    original = load_file(minilm_dir / "model.safetensors")
    key = next(k for k in original if k.endswith("encoder.layer.2.intermediate.dense.weight"))
    cases = {
        "missing": ({k: v for k, v in original.items() if k != key}, "is missing"),
        "shape": ({**original, key: original[key][:10]}, "has shape (10, 384), the config needs (1536, 384)"),
        "nan": (
            {
                **original,
                key: np.where(
                    np.arange(original[key].size).reshape(original[key].shape) < 3, np.nan, original[key]
                ).astype(np.float32),
            },
            "holds 3 NaN or infinite",
        ),
    }
    for name, (tensors, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(minilm_dir, folder)
        save_file(tensors, folder / "model.safetensors")
        with pytest.raises(ValueError, match="intermediate.dense.weight") as e:
            NumpyEncoder.from_pretrained(folder)
        assert message in str(e.value)


def test_what_the_numpy_backend_cannot_run_is_refused(minilm_dir, tmp_path):
    with pytest.raises(ValueError, match="backend must be 'torch' or 'numpy'"):
        Encoder.from_pretrained(minilm_dir, backend="jax")
    with pytest.raises(ValueError, match="on CPU in float32 without quantization"):
        Encoder.from_pretrained(minilm_dir, backend="numpy", quantize="int8")
    folder = tmp_path / "int8"
    Encoder.from_pretrained(minilm_dir, quantize="int8").save_pretrained(folder)
    with pytest.raises(ValueError, match="has none \\(or holds an int8 model\\); use backend='torch'"):
        NumpyEncoder.from_pretrained(folder)
    # the command line falls back to torch for such a folder
    result = subprocess.run(
        [sys.executable, "-m", "minibert", "similarity", "--model", str(folder), "a", "b"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "1.00" in result.stdout, result.stderr
    gelu_new = tmp_path / "gelu_new"
    shutil.copytree(minilm_dir, gelu_new)
    config = json.loads((gelu_new / "config.json").read_text())
    (gelu_new / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    with pytest.raises(ValueError, match="not hidden_act 'gelu_new'"):
        NumpyEncoder.from_pretrained(gelu_new)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: t.__setitem__("pooler.dense.weight", t["pooler.dense.weight"].astype(np.int32)),
            r"'pooler\.dense\.weight' has dtype int32; expected floating point",
        ),
        (
            lambda t: t.__setitem__("encoder.layer.9.output.dense.bias", np.zeros(384, np.float32)),
            r"unexpected key 'encoder\.layer\.9\.output\.dense\.bias'",
        ),
        (
            lambda t: t.__setitem__("bert.pooler.dense.bias", t["pooler.dense.bias"]),
            r"fills 'pooler\.dense\.bias', which another key already filled",
        ),
    ],
)
def test_the_numpy_backend_refuses_what_the_torch_backend_refuses(minilm_dir, tmp_path, change, message):
    import shutil

    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(minilm_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        NumpyEncoder.from_pretrained(folder)
    with pytest.raises((ValueError, CheckpointError)):
        Encoder.from_pretrained(folder)


@pytest.mark.parametrize("value", [2, 0.5, -1, float("nan")])
def test_the_specification_refuses_mask_values_other_than_0_and_1(value):
    from minibert.config import BertConfig
    from minibert.formats.names import hf_shapes
    from minibert.tools import spec

    config = BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=12,
        max_position_embeddings=8,
    )
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in hf_shapes(config).items()}
    with pytest.raises(ValueError, match=f"attention_mask holds {value!r}"):
        spec.encode(weights, config, np.array([[1, 2, 3]]), np.array([[1, 1, value]]))


def test_the_public_api_reaches_the_numpy_encoder_without_torch(encoders):
    """`from minibert import NumpyEncoder` never imports torch, and it streams as the torch Encoder does."""
    code = (
        "import sys\nfrom minibert import NumpyEncoder\nencoder = NumpyEncoder.from_pretrained()\n"
        "chunks = list(encoder.encode_stream(['a first text', 'a second', 'a third one'], chunk_size=2))\n"
        "print([start for start, _ in chunks], [v.shape for _, v in chunks], 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 2] [(2, 384), (1, 384)] False"
    _, numpy_encoder = encoders
    streamed = np.concatenate([v for _, v in numpy_encoder.encode_stream(TEXTS, chunk_size=3)])
    np.testing.assert_allclose(streamed, numpy_encoder.encode(TEXTS), atol=1e-6, rtol=0)
