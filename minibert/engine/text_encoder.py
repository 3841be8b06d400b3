"""`TextEncoder`: the public face of an Engine, shared by the torch `Encoder` and the `NumpyEncoder`, which
differ only in the backend they give it and how they load a model folder. Its `encode` takes minibert's
keywords and sentence-transformers' own, each doing what it does there. Torch-free."""

from __future__ import annotations

import numpy as np

from minibert.engine.core import Engine, warn_truncated
from minibert.engine.pooling import l2_normalize
from minibert.tokenizer import as_text_list

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUTS = ("sentence_embedding", "token_embeddings")


class TextEncoder:
    """encode / encode_stream over `engine`, with the engine's defaults readable as attributes. `prompts`
    (name -> text) and `default_prompt_name` are a sentence-transformers folder's
    (config_sentence_transformers.json): the default prompt goes before every text unless a call names
    another or gives its own."""

    def __init__(self, engine: Engine, prompts: dict | None = None, default_prompt_name: str | None = None):
        self.engine = engine
        self.prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name

    # the defaults a call starts from (a sentence-transformers folder's metadata, or the caller's)
    tokenizer = property(lambda self: self.engine.tokenizer)
    config = property(lambda self: self.engine.config)
    dim = property(lambda self: self.engine.dim)
    lowercase = property(lambda self: self.engine.lowercase)
    pooling = property(lambda self: self.engine.defaults.pooling)
    normalize = property(lambda self: self.engine.defaults.normalize)
    max_length = property(lambda self: self.engine.defaults.max_length, doc="None: the model's own limit")

    def prompt(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """The text put before each input: `prompt` as given, else the named one, else the folder's default."""
        if prompt is not None and prompt_name is not None:
            raise ValueError("give prompt or prompt_name, not both")
        if prompt is not None:
            return prompt
        name = self.default_prompt_name if prompt_name is None else prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise ValueError(f"no prompt named {name!r}; this model's prompts: {known}")
        return self.prompts[name]

    def encode(
        self,
        texts,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress: bool | None = None,
        convert_to: str = "numpy",
        prompt: str | None = None,
        prompt_name: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: str = "float32",
        convert_to_tensor: bool = False,
        convert_to_numpy: bool = True,
        output_value: str = "sentence_embedding",
        show_progress_bar: bool | None = None,
    ):
        """Embed a string, giving (H,), or a list of strings, giving (N, H), float32, rows in input order.

        Texts are sorted by token count and batched, so each batch pads little, then put back in order.
        Texts longer than `max_length` tokens (the prompt's included) are truncated, with one warning saying
        how many. `pooling` and `normalize` override the model's own (its sentence-transformers metadata).
        A progress bar shows on a terminal for a long call unless `show_progress=False`.

        sentence-transformers' keywords do what they do there: `prompt` / `prompt_name` (the folder's
        prompts); `output_value="token_embeddings"` gives each text's token vectors, unpadded;
        `truncate_dim` keeps the first dimensions, and `normalize_embeddings` scales the result to unit
        length after that; `precision` int8 / uint8 maps each dimension's range over this call's vectors
        (its minimum to its maximum, so a call needs two texts or more) onto 256 steps, binary / ubinary
        packs the signs into bits (sentence_transformers.quantization.quantize_embeddings' rules);
        `convert_to_tensor` gives a torch tensor (as `convert_to="torch"`: torch backend only).
        """
        torch_backend = self.engine.backend.xp.__name__ == "torch"
        if convert_to_tensor:
            convert_to = "torch"
        if convert_to not in ("numpy", "torch") or (convert_to == "torch" and not torch_backend):
            raise ValueError(f"convert_to must be 'numpy' or 'torch' (torch backend), got {convert_to!r}")
        if output_value not in OUTPUTS:
            raise ValueError(f"output_value must be one of {', '.join(OUTPUTS)}, got {output_value!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if truncate_dim is not None and (
            isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or not 1 <= truncate_dim <= self.dim
        ):
            raise ValueError(f"truncate_dim must be an integer from 1 to the model's {self.dim}, got {truncate_dim!r}")
        if output_value == "token_embeddings" and (truncate_dim or normalize_embeddings or precision != "float32"):
            raise ValueError("truncate_dim, normalize_embeddings and precision are for sentence embeddings")
        if show_progress_bar is not None:
            show_progress = show_progress_bar
        single = isinstance(texts, str)
        texts = as_text_list(texts, "texts")
        engine = self.engine
        options = engine.options(
            pooling=pooling,
            normalize=normalize,
            batch_size=batch_size,
            max_length=max_length,
            prompt=self.prompt(prompt, prompt_name),
        )
        encodings, truncated = engine.tokenize(texts, options)
        if output_value == "token_embeddings":
            out = engine.token_vectors(encodings, options)
            warn_truncated(truncated, len(texts), options.max_length)
            out = [engine.backend.to_numpy(v) for v in out] if convert_to == "numpy" else out
            return out[0] if single else out
        out = engine.embed(encodings, options, show_progress)
        warn_truncated(truncated, len(texts), options.max_length)
        if truncate_dim is not None:
            out = out[:, :truncate_dim]
        if normalize_embeddings:
            out = l2_normalize(engine.backend.xp, out)
        if precision != "float32":
            out = quantize_embeddings(engine.backend.to_numpy(out), precision)
            if convert_to == "torch":
                import torch

                out = torch.from_numpy(out)
        elif convert_to == "numpy":
            out = engine.backend.to_numpy(out)
        return out[0] if single else out

    def encode_stream(self, texts, *, chunk_size: int = 4096, stats: dict | None = None, **options):
        """Engine.encode_stream: (start_index, vectors) chunks of any iterable of strings, in input order,
        equal to encode's vectors, memory bounded by `chunk_size`. `options` are encode's."""
        return self.engine.encode_stream(texts, chunk_size=chunk_size, stats=stats, **options)

    def similarity(self, a, b=None):
        """Cosine similarity of every row of `a` with every row of `b` (default: `a` itself), (N, M) numpy."""
        a = np.atleast_2d(np.asarray(a, dtype=np.float32))
        b = a if b is None else np.atleast_2d(np.asarray(b, dtype=np.float32))
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"similarity needs (N, H) and (M, H) vectors, got {a.shape} and {b.shape}")
        return l2_normalize(np, a) @ l2_normalize(np, b).T


def quantize_embeddings(vectors: np.ndarray, precision: str) -> np.ndarray:
    """(n, d) float vectors at `precision`, by sentence-transformers' rules: int8 / uint8 map each dimension's
    [min, max] over these vectors onto 256 steps (floor, then -128 for int8); binary / ubinary pack the signs
    (> 0) into bits, 8 dimensions a byte (minus 128 for binary)."""
    if precision in ("int8", "uint8"):
        if vectors.shape[0] < 2:
            raise ValueError(
                f"precision {precision!r} takes its ranges from the call's vectors: give two texts or more"
            )
        low, high = vectors.min(0), vectors.max(0)
        steps = (high - low) / 255
        steps = np.where(steps == 0, 1, steps)
        levels = np.clip(np.floor((vectors - low) / steps), 0, 255)
        return levels.astype(np.uint8) if precision == "uint8" else (levels - 128).astype(np.int8)
    bits = np.packbits(vectors > 0, axis=-1)
    return bits if precision == "ubinary" else (bits - 128).astype(np.int8)
