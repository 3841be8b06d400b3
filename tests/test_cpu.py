"""The CPU-feature decision (minibert/fast/cpu.py) and both branches of every fast path that depends on it.

The fallback branches run on any machine through `cpu.override`; the native ones where the machine has
the feature. A subprocess with oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2) runs the AVX2 kernels for
real, including on an AVX-512 machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minibert import Encoder
from minibert.fast import cpu
from minibert.fast.onednn import FusedLinear, onednn_linear
from minibert.fast.quantize import Int8Linear, int8_available

TEXTS = [
    "A man is eating food.",
    "The girl is carrying a baby.",
    "東京は日本の首都です。",
    "A longer sentence about the committee and its budget for the spring meeting. " * 4,
]


def test_features_come_from_torch_and_the_isa_cap():
    f = cpu.detect()
    assert f.capability == torch.backends.cpu.get_cpu_capability()
    assert f.onednn_bf16 == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert f.describe().startswith(f.capability)
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in cpu._NO_AVX512_ISAS
    assert f.fused_gelu == (f.capability.startswith("AVX512") and not capped)
    assert f.onednn_f32 == (f.fused_gelu and f.onednn)
    code = "from minibert.fast import cpu; f = cpu.detect(); print(f.vnni, f.native_bf16, f.fused_gelu, f.onednn_f32)"
    for env in ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"}):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
        )
        assert result.stdout.split()[2:] == ["False", "False"], result.stderr
        if "ONEDNN_MAX_CPU_ISA" in env:
            assert result.stdout.split()[:2] == ["False", "False"], result.stderr


@pytest.mark.parametrize("fused_gelu", [False, True])
def test_gelu_post_op_or_apart_gives_the_same_layer(fused_gelu):
    """The feed-forward GELU inside oneDNN's product (AVX-512) or after it (AVX2): both equal F.gelu of
    the plain product; an int8 layer stays as close to float32 either way."""
    if onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN linear kernel")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 256)
    x = torch.randn(3, 9, 64)
    expected = F.gelu(linear(x))
    with cpu.override(fused_gelu=fused_gelu, onednn_f32=True), torch.inference_mode():
        fused = FusedLinear(linear, gelu=True)
        assert (fused(x) - expected).abs().max() <= 1e-5
        assert fused._packed is not None  # the product itself still ran through oneDNN
        if int8_available():
            got = Int8Linear(linear, gelu=True)(x)
            assert F.cosine_similarity(got, expected, dim=-1).min() > 0.999


def test_override_is_scoped():
    before = cpu.features()
    with cpu.override(vnni=False, onednn_bf16=False) as f:
        assert cpu.features() is f and not f.vnni and not f.onednn_bf16
        with cpu.override(native_bf16=False):
            assert not cpu.features().vnni
    assert cpu.features() == before


def test_float32_takes_torchs_linear_where_onednn_does_not_pay():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 256)
    x = torch.randn(3, 9, 64)
    with cpu.override(onednn_f32=False, fused_gelu=False), torch.inference_mode():
        fused = FusedLinear(linear, gelu=True)
        assert torch.equal(fused(x), F.gelu(linear(x)))
        assert fused._packed is None  # never sent to oneDNN


def _bf16_linear_uses_onednn(linear, x):
    """Whether FusedLinear sent this bfloat16 input to oneDNN (it packs a weight only when it does)."""
    fused = FusedLinear(linear)
    with torch.inference_mode():
        y = fused(x)
    return fused._packed is not None, y


def test_bfloat16_linear_without_onednn_bf16_takes_the_plain_path():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with cpu.override(onednn_bf16=False):
        used, y = _bf16_linear_uses_onednn(linear, x)
    assert not used
    torch.testing.assert_close(y, F.linear(x, linear.weight, linear.bias))


def test_bfloat16_linear_with_onednn_bf16_uses_onednn():
    if onednn_linear() is None or not cpu.detect().onednn_bf16:
        pytest.skip(f"this CPU ({cpu.detect().describe()}) cannot run oneDNN's bfloat16 kernel")
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    used, y = _bf16_linear_uses_onednn(linear, x)
    assert used
    torch.testing.assert_close(y.float(), F.linear(x, linear.weight, linear.bias).float(), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("native", [False, True])
def test_bfloat16_encoder_is_correct_and_warns_once_without_native_bf16(minilm_dir, native, monkeypatch):
    import minibert.engine.torch_backend

    monkeypatch.setattr(minibert.engine.torch_backend, "_warned_bfloat16", False)
    reference = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    with cpu.override(native_bf16=native, onednn_bf16=native and cpu.detect().onednn_bf16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoder = Encoder.from_pretrained(minilm_dir, dtype=torch.bfloat16)
            Encoder.from_pretrained(minilm_dir, dtype=torch.bfloat16)  # a second load: no second warning
            got = encoder.encode(TEXTS)
    slow = [w for w in caught if "no faster than float32" in str(w.message)]
    assert len(slow) == (0 if native else 1)
    cosine = (got * reference).sum(1)
    assert cosine.min() > 0.999, cosine


@pytest.mark.skipif(not int8_available(), reason="this torch build has no oneDNN int8 kernel")
@pytest.mark.parametrize("vnni", [False, True])
def test_int8_weights_fit_the_cpu(vnni):
    """Without VNNI the weights are kept to 7 bits, so oneDNN's 16-bit sums cannot saturate there."""
    if vnni and not cpu.detect().vnni:
        pytest.skip(f"this CPU ({cpu.detect().describe()}) has no VNNI")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    x = torch.randn(5, 7, 64)
    with cpu.override(vnni=vnni), torch.inference_mode():
        layer = Int8Linear(linear)
        assert layer.weight_max == (127 if vnni else 63)
        got, expected = layer(x), linear(x)
    assert F.cosine_similarity(got, expected, dim=-1).min() > 0.999
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_avx2_kernels_for_real():
    """With oneDNN held to AVX2, as on most laptops: bfloat16 runs (slowly, with its warning) instead of
    crashing, and an int8 layer keeps its accuracy."""
    code = textwrap.dedent("""
        import warnings, torch, torch.nn.functional as F
        from minibert.fast import cpu
        from minibert.fast.onednn import FusedLinear
        from minibert.fast.quantize import Int8Linear, int8_available
        f = cpu.detect()
        assert not f.vnni and not f.onednn_bf16 and not f.native_bf16, f
        torch.manual_seed(0)
        linear = torch.nn.Linear(64, 96)
        x = torch.randn(5, 7, 64)
        with torch.inference_mode():
            if int8_available():
                cos = F.cosine_similarity(Int8Linear(linear)(x), linear(x), dim=-1).min().item()
                assert cos > 0.999, cos
            y = FusedLinear(linear.to(torch.bfloat16))(x.to(torch.bfloat16))
            assert torch.isfinite(y).all()
        print("ok")
    """)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(not int8_available(), reason="this torch build has no oneDNN int8 kernel")
def test_int8_encoder_without_vnni_stays_close_to_float32(minilm_dir):
    reference = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    with cpu.override(vnni=False):
        got = Encoder.from_pretrained(minilm_dir, quantize="int8").encode(TEXTS)
    cosine = (got * reference).sum(1)
    assert cosine.min() > 0.98, cosine
    assert np.isfinite(got).all()


def test_model_name_reads_the_processor_name_or_falls_back(monkeypatch):
    name = cpu.model_name()
    assert isinstance(name, str) and name and "\n" not in name
    import builtins
    import platform

    real_open = builtins.open

    def no_cpuinfo(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            raise FileNotFoundError(path)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    assert cpu.model_name() == (platform.processor() or platform.machine())
