"""What this CPU can do, decided in one place for every fast path.

The fast paths in `onednn.py` and `quantize.py` need instructions that not every x86-64 CPU has:
- oneDNN bfloat16 matrix products run only with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; without them
  the kernel refuses, so bfloat16 takes torch's plain path. Without bfloat16 dot-product instructions
  (AVX512_BF16 or AMX) bfloat16 computes correctly but is no faster than float32.
- oneDNN's int8 products sum u8 x s8 pairs in saturating 16-bit lanes unless the CPU has VNNI
  (AVX512_VNNI, AVX-VNNI or AMX). There, 8-bit weights overflow the lanes (a layer's cosine to float
  drops to 0.97, measured), so int8 weights are kept to 7 bits, [-63, 63]: 2 * 255 * 63 fits in 16 bits.
- oneDNN's float32 linear kernel with a packed weight beats torch's own (MKL) only with AVX-512. With
  oneDNN and MKL held to AVX2 it was 5% slower on the MiniLM corpus and 13% on one query (measured on
  a 2-core Xeon), and on a real AVX2 EPYC bert-base 8x128 ran 5-10% slower through it. There float32
  takes torch's linear layers.
- oneDNN can apply the exact GELU inside the feed-forward's first matrix product (a post-op). With
  AVX-512 that saves a pass over the widest activation; with AVX2 the post-op costs more than the pass
  it saves (the product took 20.5-21.7 ms with it and 14.7-15.0 ms without on one layer of a 32x28
  batch on a 2-core AVX2 EPYC, while F.gelu on the same tensor took 1.3 ms), so there the GELU (of the
  int8 layers, which always run through oneDNN) runs as its own operation after the product.
- int8 products of few rows (one query, a batch of short texts) run faster through FBGEMM's dynamic int8
  linear kernel, which quantizes the input inside its own pass, than through oneDNN's, whose input
  minibert quantizes in separate passes: 19-46 against 71-115 us per product at 8 rows, about the same
  at 128-1024 rows (all-MiniLM-L6-v2's shapes, 2-core AVX-512 EPYC). FBGEMM needs AVX2; above
  `INT8_FBGEMM_MAX_ROWS` rows, oneDNN's kernel takes the product. The first feed-forward projection
  goes to oneDNN from fewer rows where oneDNN applies its GELU inside the product (AVX-512), which FBGEMM
  cannot: at 512 rows FBGEMM and a separate GELU took 4.8 ms against oneDNN's 2.6 ms, at 128 rows
  about the same (one thread, 384 -> 1536).

`features()` answers from torch's own CPU queries, capped by ONEDNN_MAX_CPU_ISA when that variable
limits what oneDNN may use. Tests change the answer with `override(...)`, so every branch runs on
every machine.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class CPUFeatures:
    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...
    onednn: bool  # oneDNN (mkldnn) is in this torch build and usable
    onednn_bf16: bool  # oneDNN can run bfloat16 matrix products here
    native_bf16: bool  # bfloat16 dot products in hardware: bfloat16 is faster than float32
    vnni: bool  # int8 dot products without 16-bit saturation
    onednn_f32: bool = True  # oneDNN's float32 linear kernel is faster than torch's (AVX-512, measured)
    fused_gelu: bool = True  # oneDNN's GELU post-op is faster than a separate GELU (AVX-512, measured)
    fbgemm_int8: bool = True  # FBGEMM's dynamic int8 linear kernel is in this torch build (x86, AVX2 or better)

    def describe(self) -> str:
        extras = [
            name
            for name, on in (
                ("oneDNN bf16", self.onednn_bf16),
                ("native bf16", self.native_bf16),
                ("VNNI", self.vnni),
                ("oneDNN float32", self.onednn_f32),
                ("fused GELU", self.fused_gelu),
                ("FBGEMM int8", self.fbgemm_int8),
            )
            if on
        ]
        return f"{self.capability} ({', '.join(extras) or 'no bf16 or VNNI'})"


# ONEDNN_MAX_CPU_ISA values that leave out VNNI, those that leave out the bf16 instructions, and those
# that leave out AVX-512 altogether.
_NO_VNNI_ISAS = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}
_NO_BF16_ISAS = _NO_VNNI_ISAS | {"AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI"}
_NO_AVX512_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"}


@functools.cache
def detect() -> CPUFeatures:
    """The features of the machine this process runs on (asked once)."""
    import torch

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    cpu = torch.cpu
    onednn = torch.backends.mkldnn.is_available()
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512") and cap not in _NO_AVX512_ISAS
    return CPUFeatures(
        capability=torch.backends.cpu.get_cpu_capability(),
        onednn=onednn,
        onednn_bf16=onednn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        native_bf16=(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()) and cap not in _NO_BF16_ISAS,
        vnni=(cpu._is_vnni_supported() or cpu._is_amx_tile_supported()) and cap not in _NO_VNNI_ISAS,
        onednn_f32=onednn and avx512,
        fused_gelu=avx512,
        fbgemm_int8="fbgemm" in torch.backends.quantized.supported_engines
        and torch.backends.cpu.get_cpu_capability().startswith("AVX"),
    )


# The most rows (tokens in a batch) an int8 product sends to FBGEMM rather than oneDNN, and the most for
# a product followed by the GELU where oneDNN would apply it inside its kernel.
INT8_FBGEMM_MAX_ROWS = 512
INT8_FBGEMM_MAX_ROWS_GELU = 128


def int8_kernel(rows: int, gelu: bool = False) -> str:
    """Which int8 kernel computes a product of `rows` rows (followed by the GELU, if `gelu`) here:
    "fbgemm" or "onednn"."""
    f = features()
    limit = INT8_FBGEMM_MAX_ROWS_GELU if gelu and f.fused_gelu else INT8_FBGEMM_MAX_ROWS
    return "fbgemm" if f.fbgemm_int8 and rows <= limit else "onednn"


def model_name() -> str:
    """The processor's marketing name ("Intel(R) Xeon(R) Processor @ 2.50GHz"), for benchmark headers:
    every speed figure names the CPU it was measured on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


_override: CPUFeatures | None = None


def features() -> CPUFeatures:
    """What the fast paths may use: the detected features, unless a test has overridden them."""
    return _override if _override is not None else detect()


@contextmanager
def override(**changes):
    """Pretend the CPU has (or lacks) features, e.g. `with override(vnni=False, onednn_bf16=False):`.
    Only takes features away or gives back what the machine has: a kernel the CPU cannot run still fails."""
    global _override
    before = _override
    _override = dataclasses.replace(features(), **changes)
    try:
        yield _override
    finally:
        _override = before
