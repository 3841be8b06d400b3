"""Inference fast paths, applied to a loaded model without changing its weights or its state dict.

`fuse_linear_layers(model)` runs the encoder's Linear layers on CPU through oneDNN, the kernel library
PyTorch's own compiler (inductor) emits for CPU linear layers, with the feed-forward GELU fused into
the first projection, and each weight reordered once into oneDNN's blocked layout instead of on every
call. On the 2-core AVX-512 machine this project is measured on, a (2048, 384) x (384, 1536) float32
product runs at ~215 GFLOP/s through oneDNN against ~190 through the default BLAS; the pre-packed
weight gains another 3-4%, the fused GELU saves a pass over the widest activation. The price is memory:
the packed weights are a second copy of the linear layers' weights (42 MB for all-MiniLM-L6-v2, 340 MB
for bert-base), kept so that the model itself, its parameters and its state dict stay as they were.
Results differ from the plain path by float rounding only. Anything else (training, CUDA, a torch
without the kernel) takes the plain path, so the model stays correct wherever it runs. Without AVX-512
the oneDNN float32 kernel and its GELU post-op are slower than torch's own linear layer and F.gelu
(measured; see minibert/fast/cpu.py), so there float32 takes the plain path too. bfloat16 goes
through oneDNN only where `minibert.fast.cpu` says the CPU can run its bfloat16 kernel (AVX-512 BW/VL/DQ or
AVX-NE-CONVERT); elsewhere bfloat16 takes torch's plain path, which is correct but no faster.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.fast.cpu import features, int8_kernel
from minibert.model import BertModel, FeedForward, Layer, SelfAttention


@functools.cache
def onednn_linear():
    """The oneDNN linear kernel, or None where this torch build cannot run it (checked once, in float32;
    `onednn_dtype_ok` says which dtypes this CPU may send to it)."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:  # present in the build, and able to run here
        x, w, b = torch.ones(2, 4), torch.ones(3, 4), torch.zeros(3)
        if not torch.equal(op(x, pack_weight(w), b, "none", [], ""), F.linear(x, w, b)):
            return None
    except (RuntimeError, NotImplementedError, AttributeError):
        return None
    return op


def onednn_dtype_ok(dtype: torch.dtype) -> bool:
    """Whether the oneDNN kernel takes `dtype` on this CPU: float32 where it is the faster kernel, bfloat16
    where it runs at all (minibert.fast.cpu decides; tests override it)."""
    f = features()
    return (dtype == torch.float32 and f.onednn_f32) or (dtype == torch.bfloat16 and f.onednn_bf16)


def pack_weight(weight):
    """(out, in) weight -> the same values in oneDNN's blocked layout for matrix products of a few hundred
    rows or more (the row-count hint), an opaque CPU tensor that only the oneDNN kernel reads."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 512)


class FusedLinear(nn.Linear):
    """nn.Linear (same parameters, same state-dict names) that runs through oneDNN for CPU inference,
    optionally with the exact GELU applied to its output in the same kernel."""

    def __init__(self, linear: nn.Linear, gelu: bool = False):
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias  # shared, not copied
        self.gelu = gelu
        self._packed = None  # (which weight it was made from, packed weight), made on first use

    def forward(self, x):
        fast = self._runs_onednn(x)
        post_op = fast and self.gelu and features().fused_gelu  # where oneDNN's GELU post-op pays (minibert.fast.cpu)
        if fast:
            y = onednn_linear()(
                x, self.packed_weight(), self.bias, "gelu" if post_op else "none", [], "none" if post_op else ""
            )
        else:
            y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if self.gelu and not post_op else y

    def plus(self, x, residual):
        """residual + self(x), the addition done inside the oneDNN kernel (a binary post-op) where the
        kernel runs; the same values as the two steps apart."""
        if self.gelu or not self._runs_onednn(x):
            return residual + self(x)
        return onednn_linear().binary(x, residual, self.packed_weight(), self.bias, "add")

    def _runs_onednn(self, x) -> bool:
        """Whether this call goes to the oneDNN kernel: CPU inference in a dtype it takes here."""
        return (
            onednn_linear() is not None
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype
            and onednn_dtype_ok(x.dtype)
            and self.bias is not None
            and not (torch.is_grad_enabled() and self.weight.requires_grad)
        )

    def packed_weight(self):
        """The weight packed for oneDNN, packed again whenever the weight has changed since (an optimizer
        step or load_state_dict bumps its version; .to() gives it new storage), so it is never stale."""
        w = self.weight
        made_from = (w.data_ptr(), w._version, w.dtype)
        if self._packed is None or self._packed[0] != made_from:
            self._packed = (made_from, pack_weight(w))
        return self._packed[1]

    def __getstate__(self):  # copy.deepcopy and pickling: the packed weight is remade on first use
        return {**super().__getstate__(), "_packed": None}


class GeluFeedForward(nn.Module):
    """A FeedForward whose first projection applies the exact GELU itself (a fused kernel): it replaces
    the whole FeedForward, with the same `up` / `down` names, so the state dict does not change."""

    def __init__(self, up: nn.Module, down: nn.Module):
        super().__init__()
        self.up, self.down = up, down

    def forward(self, x):
        return self.down(self.up(x))  # (B, L, H) -> (B, L, I), GELU included -> (B, L, H)


class FusedLayer(Layer):
    """A Layer (the same modules, so the same state dict) whose inference forward on CPU runs four oneDNN
    products where Layer.forward runs six products and two additions: query, key and value as one product
    of their weights side by side, and each residual addition inside the product before it (a binary
    post-op). That is less work outside the products, which is what counts at small batches: the forward
    of one 8-token query through all-MiniLM-L6-v2 took 3.9 ms against 4.2 ms with FusedLinear layers alone
    (5.0 against 5.5 ms with 20 ms between queries), and 8.4 ms in the plain model, on the 2-core
    AVX-512 EPYC; the same on a corpus of long texts. Results differ from Layer.forward by float
    rounding only. int8 layers whose query, key and value share their smoothing (quantize_int8 makes
    them so) run those three as one FBGEMM product, where the rows are few enough for FBGEMM
    (minibert.fast.cpu.int8_kernel). Whatever the fused forward does not cover takes Layer.forward:
    attention maps, the eager attention, training, hooks on a linear layer (minibert.tools.trace), and
    any device or dtype the kernels do not take here."""

    def __init__(self, layer: Layer):
        nn.Module.__init__(self)
        self.attention, self.attention_norm = layer.attention, layer.attention_norm
        self.ffn, self.ffn_norm, self.dropout = layer.ffn, layer.ffn_norm, layer.dropout
        self._packed_qkv = None  # (which weights it was made from, packed weight, bias), made on first use
        self._int8_qkv = None  # (FBGEMM's stacked weights, shared inverse smoothing) or False, made once
        self.train(layer.training)

    def forward(self, x, mask, output_attentions=False):
        path = None if output_attentions else self._fused_path(x)
        if path is None:
            return super().forward(x, mask, output_attentions)
        a, ffn = self.attention, self.ffn
        B, L, H = x.shape
        if path == "float":
            weight, bias = self.packed_qkv()
            qkv = onednn_linear()(x, weight, bias, "none", [], "")  # (B, L, 3H): query, key, value side by side
        else:
            packed, inverse_smooth = self._int8_qkv
            qkv = torch.ops.quantized.linear_dynamic((x * inverse_smooth).view(B * L, H), packed, False)
        q, k, v = qkv.view(B, L, 3, a.num_heads, a.head_size).permute(2, 0, 3, 1, 4)  # each (B, N, L, D)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, N, L, D)
        context = context.transpose(1, 2).reshape(B, L, H)
        if path == "int8":
            x = self.attention_norm(x + a.output(context))
            return self.ffn_norm(x + ffn(x)), None
        x = self.attention_norm(a.output.plus(context, x))  # norm(x + output(context))
        inner = ffn.up(x) if isinstance(ffn, GeluFeedForward) else ffn.act(ffn.up(x))  # (B, L, I)
        return self.ffn_norm(ffn.down.plus(inner, x)), None  # norm(x + down(inner))

    def _linears(self):
        a = self.attention
        return a.query, a.key, a.value, a.output, self.ffn.up, self.ffn.down

    def _fused_path(self, x) -> str | None:
        """ "float", "int8", or None for Layer.forward."""
        a = self.attention
        linears = self._linears()
        if (
            self.training
            or a.implementation != "sdpa"
            or a.record is not None
            or any(m._forward_hooks or m._forward_pre_hooks for m in linears)
        ):
            return None
        if all(type(m) is FusedLinear for m in linears):
            return "float" if all(m._runs_onednn(x) for m in (a.query, a.key, a.value)) else None
        from minibert.fast.quantize import Int8Linear  # (quantize imports this module)

        if not all(type(m) is Int8Linear for m in linears) or x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        if self._int8_qkv is None:
            self._int8_qkv = Int8Linear.stacked_fbgemm(linears[:3]) or False
        fits = self._int8_qkv and int8_kernel(x.shape[0] * x.shape[1]) == "fbgemm"
        return "int8" if fits else None

    def packed_qkv(self):
        """query, key and value's weights stacked (3H, H) and packed for oneDNN, with their biases (3H,),
        made again whenever one of the weights has changed (see FusedLinear.packed_weight)."""
        parts = self._linears()[:3]
        made_from = tuple((m.weight.data_ptr(), m.weight._version, m.bias._version, m.weight.dtype) for m in parts)
        if self._packed_qkv is None or self._packed_qkv[0] != made_from:
            weight = torch.cat([m.weight.detach() for m in parts])
            bias = torch.cat([m.bias.detach() for m in parts])
            self._packed_qkv = (made_from, pack_weight(weight), bias)
        return self._packed_qkv[1:]

    def __getstate__(self):  # copy.deepcopy and pickling: the packed weights are remade on first use
        return {**super().__getstate__(), "_packed_qkv": None, "_int8_qkv": None}


def swap_linear_layers(model: nn.Module, make) -> nn.Module:
    """Replace the encoder's linear layers, found by walking the model's modules rather than by its
    attribute layout: each SelfAttention's query, key, value and output, and each FeedForward's up and
    down. A FeedForward with the exact GELU is replaced whole by a GeluFeedForward whose `up` applies it.

    `make(name, linear, gelu, owns_input)` returns the new module for the nn.Linear `linear` at module
    path `name` (`owns_input`: nothing reads its input afterwards). Raises ValueError when the model has
    no such modules, or one lacks a linear layer it should have: a fast path never degrades silently.
    """
    attentions, ffns = _blocks(model)
    for name, attention in attentions:
        for part in ("query", "key", "value", "output"):
            linear = _linear(attention, part, name)
            setattr(attention, part, make(f"{name}.{part}", linear, gelu=False, owns_input=part == "output"))
    modules = dict(model.named_modules())
    for name, ffn in ffns:
        gelu = isinstance(ffn, GeluFeedForward) or ffn.act is F.gelu  # the exact GELU, foldable into `up`
        up = make(f"{name}.up", _linear(ffn, "up", name), gelu=gelu, owns_input=False)
        down = make(f"{name}.down", _linear(ffn, "down", name), gelu=False, owns_input=True)
        if gelu:
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent], attr, GeluFeedForward(up, down))
        else:
            ffn.up, ffn.down = up, down
    return model


def _blocks(model):
    """The SelfAttention and feed-forward modules, each checked to hold the linear layers swapped."""
    attentions = [(n, m) for n, m in model.named_modules() if isinstance(m, SelfAttention)]
    ffns = [(n, m) for n, m in model.named_modules() if isinstance(m, (FeedForward, GeluFeedForward))]
    if not attentions or not ffns:
        raise ValueError(
            f"{type(model).__name__} has no SelfAttention and FeedForward modules to swap the linear "
            "layers of: not a minibert BertModel"
        )
    for name, module in attentions + ffns:
        for part in ("query", "key", "value", "output") if isinstance(module, SelfAttention) else ("up", "down"):
            _linear(module, part, name)
    return attentions, ffns


def linear_layer_names(model: nn.Module) -> list[str]:
    """The module paths swap_linear_layers would replace (checked, without changing anything)."""
    attentions, ffns = _blocks(model)
    return [f"{n}.{p}" for n, _ in attentions for p in ("query", "key", "value", "output")] + [
        f"{n}.{p}" for n, _ in ffns for p in ("up", "down")
    ]


def _linear(module, part, name):
    child = getattr(module, part, None)
    if not isinstance(child, nn.Module):
        raise ValueError(
            f"{name} ({type(module).__name__}) has no {part!r} layer to swap; it has "
            f"{', '.join(n for n, _ in module.named_children()) or 'none'}"
        )
    return child


def fusion_pays(model: nn.Module) -> bool:
    """Whether fuse_linear_layers makes `model` faster here: on CPU, in a dtype that oneDNN's kernel takes
    on this CPU (minibert.fast.cpu), or with int8 layers, whose query, key and value it runs as one product.
    Elsewhere the swapped layers would run torch's own kernels after a few more checks per call: one
    8-token query took 8.4 instead of 8.0 ms that way (EPYC held to AVX2)."""
    from minibert.fast.quantize import Int8Linear

    param = next(model.parameters())
    if param.device.type != "cpu":
        return False
    return onednn_dtype_ok(param.dtype) or any(isinstance(m, Int8Linear) for m in model.modules())


def fuse_linear_layers(model: BertModel) -> BertModel:
    """Swap the encoder's nn.Linear layers for FusedLinear, in place (layers already swapped, such as int8
    ones, stay), and each Layer for a FusedLayer holding the same modules; returns the model."""

    def make(name, linear, gelu, owns_input):
        if type(linear) is nn.Linear:
            return FusedLinear(linear, gelu=gelu)
        if gelu and not getattr(linear, "gelu", False):
            raise ValueError(f"{name}: a {type(linear).__name__} that does not apply the GELU it must fold")
        return linear

    swap_linear_layers(model, make)
    modules = dict(model.named_modules())
    for name, module in list(modules.items()):
        if type(module) is Layer:
            parent, _, attr = name.rpartition(".")
            setattr(modules[parent], attr, FusedLayer(module))
    return model
