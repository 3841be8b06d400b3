"""`TextEncoder`: the public face of an Engine, shared by the torch `Encoder` and the `NumpyEncoder`, which
differ only in the backend they give it and how they load a model folder. Torch-free."""

from __future__ import annotations

from minibert.engine.core import Engine, warn_truncated
from minibert.tokenizer import as_text_list


class TextEncoder:
    """encode / encode_stream over `engine`, with the engine's defaults readable as attributes."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # the defaults a call starts from (a sentence-transformers folder's metadata, or the caller's)
    tokenizer = property(lambda self: self.engine.tokenizer)
    config = property(lambda self: self.engine.config)
    dim = property(lambda self: self.engine.dim)
    lowercase = property(lambda self: self.engine.lowercase)
    pooling = property(lambda self: self.engine.defaults.pooling)
    normalize = property(lambda self: self.engine.defaults.normalize)
    max_length = property(lambda self: self.engine.defaults.max_length, doc="None: the model's own limit")

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
    ):
        """Embed a string, giving (H,), or a list of strings, giving (N, H), float32, rows in input order.

        Texts are sorted by token count and batched, so each batch pads little, then put back in order.
        Texts longer than `max_length` tokens are truncated, with one warning saying how many. A progress
        bar shows on a terminal for a long call unless `show_progress=False`. `convert_to="torch"` gives
        a tensor on the model's device (torch backend only).
        """
        if convert_to not in ("numpy", "torch") or (
            convert_to == "torch" and self.engine.backend.xp.__name__ != "torch"
        ):
            raise ValueError(f"convert_to must be 'numpy' or 'torch' (torch backend), got {convert_to!r}")
        single = isinstance(texts, str)
        texts = as_text_list(texts, "texts")
        engine = self.engine
        options = engine.options(pooling=pooling, normalize=normalize, batch_size=batch_size, max_length=max_length)
        encodings, truncated = engine.tokenize(texts, options)
        out = engine.embed(encodings, options, show_progress)
        warn_truncated(truncated, len(texts), options.max_length)
        out = engine.backend.to_numpy(out) if convert_to == "numpy" else out
        return out[0] if single else out

    def encode_stream(self, texts, *, chunk_size: int = 4096, stats: dict | None = None, **options):
        """Engine.encode_stream: (start_index, vectors) chunks of any iterable of strings, in input order,
        equal to encode's vectors, memory bounded by `chunk_size`. `options` are encode's."""
        return self.engine.encode_stream(texts, chunk_size=chunk_size, stats=stats, **options)
