"""int8 inference on CPU: the encoder's Linear layers with 8-bit weights and 8-bit activations.

Weights are int8 with one scale per output channel. Activations are quantized on every call (dynamic
quantization): one scale and zero point for the whole input, from its minimum and maximum. A product of
int8 weights and uint8 activations runs through oneDNN's int8 kernel, which also applies the scales,
the bias and, for the first feed-forward projection, the GELU. A product of few rows (a query, a batch
of short texts) runs through FBGEMM's dynamic int8 kernel instead, which quantizes its input in the same
call: minibert.fast.cpu.int8_kernel chooses. Both kernels hold the same int8 weights, packed each
their own way.

BERT's activations have a few channels far larger than the rest, and a range shared by all channels
would leave the others a handful of levels. So each layer is smoothed first (SmoothQuant, Xiao et al.
2023): input channel j is divided by s_j and the weight's column j multiplied by it, which leaves the
product unchanged, with s_j = max|x_j|^alpha / max|w_j|^(1 - alpha). max|x_j| is measured on
calibration texts; the division by s is folded into the multiply that quantizes the input.

The default calibration texts are strings of random words from the model's own vocabulary, with
lengths spread up to the maximum: outlier channels belong to the model, not to a text, and long texts
reach larger activations than short ones. On all-MiniLM-L6-v2, calibrating on 200 short natural
sentences gave cosine 0.83 (minimum) to float32 on long texts; the vocabulary texts give about 0.99 on
both long texts and natural sentences.

Without VNNI (minibert.fast.cpu), oneDNN sums pairs of u8 x s8 products in saturating 16-bit lanes, and
8-bit weights overflow them: a layer's cosine to float32 drops to 0.97 (measured with oneDNN held to
AVX2). There the weights are quantized to 7 bits, [-63, 63], so that 2 * 255 * 63 fits; a layer's
cosine is then 0.9999, as with VNNI. The choice is made when a layer is built, from `minibert.fast.cpu`.

Because the activation range is the whole batch's, a text's int8 vector depends a little on the texts
batched with it (cosine 0.995 between a text alone and in a batch, measured), unlike float32's 1e-6.

`quantize_int8(model, batches)` swaps the Linear layers of a BertModel for Int8Linear in
place. Quantization is lossy: scripts/bench.py reports the speed and the cosine to float32 vectors.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn as nn

from minibert.fast.cpu import features, int8_kernel
from minibert.fast.onednn import linear_layer_names, swap_linear_layers
from minibert.model import BertModel, SelfAttention


@functools.cache
def int8_available() -> bool:
    """Whether this torch build has oneDNN's int8 linear kernel and it runs here (checked once)."""
    try:
        weight = torch.ones(4, 8, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(weight, [2, 8])
        out = torch.ops.onednn.qlinear_pointwise(
            torch.full((2, 8), 130, dtype=torch.uint8),
            0.5,
            128,
            packed,
            torch.ones(4),
            torch.zeros(4, dtype=torch.long),
            None,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )
        return bool(torch.equal(out, torch.full((2, 4), 8.0)))  # (130 - 128) * 0.5 * 1 * 8 inputs
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def fbgemm_available() -> bool:
    """Whether FBGEMM's dynamic int8 linear kernel is in this torch build and runs here (checked once)."""
    try:
        packed = _fbgemm_pack(torch.ones(4, 8, dtype=torch.int8), torch.full((4,), 0.5), torch.zeros(4))
        out = torch.ops.quantized.linear_dynamic(torch.ones(2, 8), packed, False)
        return bool(torch.equal(out, torch.full((2, 4), 4.0)))  # 8 inputs x 1 x 0.5
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _fbgemm_pack(int8_weight, scale, bias):
    """(out, in) int8 weights with one scale per output channel -> FBGEMM's packed form. Its packing takes
    torch's quantized tensor type, which warns that it is deprecated; the kernel is probed at run time."""
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        raise RuntimeError(f"the quantized engine is {torch.backends.quantized.engine!r}, not FBGEMM's")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zero = torch.zeros(len(scale), dtype=torch.long)
        weight = torch._make_per_channel_quantized_tensor(int8_weight, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(weight, bias)


class Int8Linear(nn.Module):
    """A Linear layer (optionally followed by the exact GELU) computed in int8 on CPU, inference only.

    `input_absmax`: per input channel, the largest |x| seen on calibration data, for smoothing; None
    leaves the channels as they are. `owns_input`: nothing reads the input after this layer (the
    attention context, the feed-forward's inner activation), so it may be overwritten, saving a copy.
    `weight_max`: the largest int8 weight, 127 with VNNI and 63 without (see the module docstring);
    None asks minibert.fast.cpu. `weight_absmax`: per input channel, the largest |w| to smooth against,
    when layers that read the same input share one smoothing (query, key and value); None: this weight's.
    """

    def __init__(
        self,
        linear: nn.Linear,
        input_absmax: torch.Tensor | None = None,
        alpha: float = 0.7,
        gelu: bool = False,
        owns_input: bool = False,
        weight_max: int | None = None,
        weight_absmax: torch.Tensor | None = None,
    ):
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        smooth = torch.ones(weight.shape[1])
        if input_absmax is not None:  # s_j = max|x_j|^alpha / max|w_j|^(1 - alpha)
            x_max = input_absmax.float().clamp(min=1e-5)
            w_max = (weight.abs().amax(0) if weight_absmax is None else weight_absmax.float()).clamp(min=1e-5)
            smooth = (x_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self._set(weight * smooth, 1 / smooth, bias, gelu, owns_input, weight_max)  # column j times s_j

    def _set(
        self, smoothed_weight, inverse_smooth, bias, gelu, owns_input, weight_max=None, int8_weight=None, scale=None
    ):
        """Quantize `smoothed_weight` (out, in) to [-weight_max, weight_max] per output channel, or take
        `int8_weight` and `scale` as they are (a saved model), and pack it for oneDNN."""
        self.weight_max = weight_max or (127 if features().vnni else 63)
        if int8_weight is None:
            scale = (smoothed_weight.abs().amax(1) / self.weight_max).clamp(min=1e-12)  # (out,) per output channel
            int8_weight = torch.round(smoothed_weight / scale[:, None]).to(torch.int8)
        self.register_buffer("int8_weight", int8_weight, persistent=False)  # kept to save the model
        self.register_buffer("inverse_smooth", inverse_smooth)  # (in,)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", torch.zeros_like(scale, dtype=torch.long))
        self.register_buffer("bias", bias)
        self.packed = torch.ops.onednn.qlinear_prepack(int8_weight, None)  # oneDNN's layout, opaque
        self.fbgemm_packed = _fbgemm_pack(int8_weight, scale, bias) if fbgemm_available() else None  # FBGEMM's
        self.gelu, self.owns_input = gelu, owns_input
        self.out_features, self.in_features = int8_weight.shape

    @classmethod
    def from_saved(cls, int8_weight, scale, inverse_smooth, bias, gelu=False, owns_input=False, weight_max=127):
        """The layer as `saved_tensors` wrote it. Where this CPU needs narrower weights than were saved
        (no VNNI: 7 bits), they are quantized again from their dequantized values."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        if not features().vnni and weight_max > 63:
            layer._set(int8_weight.float() * scale[:, None], inverse_smooth, bias, gelu, owns_input)
        else:
            layer._set(None, inverse_smooth, bias, gelu, owns_input, weight_max, int8_weight, scale)
        return layer

    @staticmethod
    def stacked_fbgemm(layers) -> tuple | None:
        """For layers that share their input smoothing and weight range (query, key and value quantized
        together): (FBGEMM's packing of their weights stacked, the shared inverse smoothing); None where
        they do not share them or FBGEMM is missing (a fused layer then runs them one by one)."""
        first = layers[0]
        if not fbgemm_available() or any(
            m.weight_max != first.weight_max or not torch.equal(m.inverse_smooth, first.inverse_smooth) for m in layers
        ):
            return None
        parts = [(m.int8_weight, m.weight_scale, m.bias) for m in layers]
        if any(b is None for _, _, b in parts):
            return None
        weight, scale, bias = (torch.cat(t) for t in zip(*parts))
        return _fbgemm_pack(weight, scale, bias), first.inverse_smooth

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        """What a saved int8 model holds for this layer, by suffix of its Hugging Face key prefix."""
        out = {"weight": self.int8_weight, "weight_scale": self.weight_scale, "input_scale": self.inverse_smooth}
        return out | ({"bias": self.bias} if self.bias is not None else {})

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (M, in)
        x = x.mul_(self.inverse_smooth) if self.owns_input else x * self.inverse_smooth  # smoothed: x_j / s_j
        if self.fbgemm_packed is not None and int8_kernel(x.shape[0], self.gelu) == "fbgemm":
            y = torch.ops.quantized.linear_dynamic(x, self.fbgemm_packed, False)  # quantizes x itself, 8 bits
            y = torch.nn.functional.gelu(y) if self.gelu else y
            return y.reshape(*shape[:-1], self.out_features)
        low, high = torch.aminmax(x)
        low, high = min(float(low), 0.0), max(float(high), 0.0)  # holding 0: zero_point in 0..255
        scale = (high - low) / 255 or 1.0
        zero_point = round(-low / scale)
        # uint8 = round(x / scale) + zero_point: rounded as + 0.5, then truncated by the cast (all >= 0),
        # and cast through int32, which is 3x faster here than float -> uint8 in one step
        q = x.mul_(1 / scale).add_(zero_point + 0.5).clamp_(0, 255).to(torch.int32).to(torch.uint8)  # (M, in)
        post_op = self.gelu and features().fused_gelu  # where oneDNN's GELU post-op pays (minibert.fast.cpu)
        y = torch.ops.onednn.qlinear_pointwise(
            q,
            scale,
            zero_point,
            self.packed,
            self.weight_scale,
            self.weight_zero_point,
            self.bias,
            1.0,
            0,
            torch.float32,
            "gelu" if post_op else "none",
            [],
            "none" if post_op else "",
        )
        if self.gelu and not post_op:
            y = torch.nn.functional.gelu(y)
        return y.reshape(*shape[:-1], self.out_features)

    def __getstate__(self):  # the packed weight is an opaque oneDNN tensor that cannot be copied or pickled
        raise TypeError("an int8-quantized model cannot be copied or pickled; quantize the float model again")


def linear_input_absmax(model: BertModel, batches, names=None) -> dict[str, torch.Tensor]:
    """Run the model on calibration batches (dicts of model inputs) and return, per Linear layer's name
    (those in `names`, or every one), the largest |input| per input channel."""
    absmax: dict[str, torch.Tensor] = {}

    def record(name, module, inputs):
        x = inputs[0].detach()
        seen = x.abs().reshape(-1, x.shape[-1]).amax(0).float()
        absmax[name] = torch.maximum(absmax[name], seen) if name in absmax else seen

    hooks = [
        module.register_forward_pre_hook(functools.partial(record, name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and (names is None or name in names)
    ]
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    return absmax


def calibration_texts(vocab: dict[str, int], max_words: int, n: int = 128, seed: int = 0) -> list[str]:
    """n texts of random whole words from a tokenizer's vocabulary, the same texts on every call: word
    counts log-normal (median 40) up to max_words, and one text in 16 of max_words."""
    words = sorted(w for w in vocab if w.isalpha() and not (w.startswith("[") or w.startswith("##")))
    if not words:
        raise ValueError("the vocabulary holds no whole words to build calibration texts from")
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(40), 0.9, size=n), 2, max_words).astype(int)
    counts[::16] = max_words
    return [" ".join(rng.choice(words, size=k)) for k in counts]


def calibration_batches(tokenizer, max_length: int, lowercase: bool = False, batch_size: int = 16) -> list[dict]:
    """The default calibration texts, tokenized into model-input batches of similar length."""
    texts = sorted(calibration_texts(tokenizer.backend.get_vocab(), max_length), key=len)
    if lowercase:  # as the Encoder will see text
        texts = [t.lower() for t in texts]
    return [tokenizer(texts[i : i + batch_size], max_length=max_length) for i in range(0, len(texts), batch_size)]


def quantize_calibrated(model: BertModel, tokenizer, max_length: int, lowercase: bool = False) -> BertModel:
    """quantize_int8 on the default calibration texts, tokenized as the model will see text."""
    return quantize_int8(model, calibration_batches(tokenizer, max_length, lowercase))


def quantize_int8(model: BertModel, batches, alpha: float = 0.7) -> BertModel:
    """Swap the encoder layers' Linear layers for smoothed Int8Linear, in place; returns the model.
    `batches`: model inputs to calibrate on (dicts such as the tokenizer returns).

    The embeddings and the pooler stay in float32. Raises RuntimeError where the int8 kernel is missing.
    """
    if not int8_available():
        raise RuntimeError("int8 quantization needs PyTorch's oneDNN int8 kernel (x86 CPU build of torch)")
    model = model.float().eval()
    names = linear_layer_names(model)  # refuses a model whose layout it does not know, before calibrating
    absmax = linear_input_absmax(model, batches, names)
    # Query, key and value read the same input: one smoothing for the three, from their weights' joint
    # column maxima, lets a fused layer run them as one product (minibert.fast.onednn.FusedLayer).
    joint = {}
    for name, attention in model.named_modules():
        if isinstance(attention, SelfAttention):
            stacked = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
            column_max = stacked.detach().float().abs().amax(0)
            joint |= dict.fromkeys((f"{name}.query", f"{name}.key", f"{name}.value"), column_max)

    def make(name, linear, gelu, owns_input):
        if type(linear) is not nn.Linear:
            raise ValueError(f"{name} is a {type(linear).__name__}; int8 quantization starts from nn.Linear layers")
        if name not in absmax:
            raise ValueError(f"calibration saw no input for {name}: the model's forward does not use it")
        return Int8Linear(linear, absmax[name], alpha, gelu=gelu, owns_input=owns_input, weight_absmax=joint.get(name))

    return swap_linear_layers(model, make)


# --- int8 models saved once (the format: minibert/formats/int8.py) -------------------------------------


def int8_state_dict(model: BertModel) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor of a quantized BertModel under Hugging Face names (the float ones as they are; for each
    Int8Linear the tensors of minibert/formats/int8.py), and the config.json entry that says how they were
    made."""
    from minibert.formats import int8
    from minibert.formats.names import to_hf_name

    # Int8Linear holds buffers only, so the parameters are exactly the float tensors.
    family = model.config.model_type
    state = {to_hf_name(name, family): t.detach().contiguous() for name, t in model.named_parameters()}
    weight_max = None
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            prefix = to_hf_name(name + ".weight", family).removesuffix(".weight")
            state |= int8.layer_tensors(prefix, {k: v.contiguous() for k, v in module.saved_tensors().items()})
            weight_max = module.weight_max
    if weight_max is None:
        raise ValueError("the model has no int8 layers to save")
    return state, int8.config_entry(weight_max)


def save_int8_model(model: BertModel, folder) -> None:
    """Write a quantized BertModel's config.json (with its quantization entry) and its weights into
    `folder`, in the format of minibert/formats/int8.py."""
    from pathlib import Path

    from minibert.formats import int8
    from minibert.formats.checkpoint import save_safetensors

    state, entry = int8_state_dict(model)
    model.config.save_json(Path(folder) / "config.json", int8.ARCHITECTURE, **{int8.CONFIG_KEY: entry})
    save_safetensors(state, Path(folder) / int8.WEIGHTS)


def load_int8_model(folder) -> BertModel:
    """A BertModel with Int8Linear layers, from a folder `Encoder.save_pretrained` wrote for a quantized
    encoder: no calibration, and the same int8 weights, so the same vectors on the same machine."""
    from pathlib import Path

    from minibert.formats import int8
    from minibert.formats.checkpoint import build_model, encoder_weights, read_config, read_safetensors
    from minibert.formats.errors import CheckpointError
    from minibert.formats.names import to_hf_name

    folder = Path(folder)
    entry = int8.read_entry(folder)
    config = read_config(folder)
    path = int8.weights_file(folder)
    tensors = read_safetensors(path)
    origin = dict.fromkeys(tensors, path)
    floats, saved = int8.split_layers(tensors, origin)
    state, _ = encoder_weights(floats, origin, config)
    model = build_model(config, state)

    def make(name, linear, gelu, owns_input):
        prefix = to_hf_name(name + ".weight", config.model_type).removesuffix(".weight")
        if prefix not in saved:
            raise CheckpointError(f"{folder}: the int8 model has no quantized layer {prefix!r}")
        bias = floats.get(prefix + ".bias")
        parts = saved[prefix]
        return Int8Linear.from_saved(
            parts["weight"],
            parts["weight_scale"].float(),
            parts["input_scale"].float(),
            None if bias is None else bias.float(),
            gelu,
            owns_input,
            int(entry.get("weight_max", 127)),
        )

    return swap_linear_layers(model, make)
