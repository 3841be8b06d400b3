"""int8 quantization (minibert/quantize.py) against the float32 model it was made from."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minibert import Encoder
from minibert.quantize import Int8Linear, calibration_texts, int8_available

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no oneDNN int8 kernel")

TEXTS = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A monkey is playing drums.", "Der Zug fährt um acht Uhr ab.", "東京は日本の首都です。", "",
    "The committee postponed its decision on the new budget until the spring meeting. " * 8,
]


SENTENCES = Path(__file__).parents[1] / "scripts" / "data" / "sentiment_test.tsv"  # 86 short reviews


def rows_cosine(a, b):
    return F.cosine_similarity(a, b, dim=-1)


def test_int8_linear_tracks_the_float_layer():
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


def test_int8_encoder_stays_close_to_float32(minilm_dir):
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
