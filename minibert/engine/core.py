"""`Engine`: the one owner of texts -> vectors. Options are resolved and checked once (`options`), inputs
are tokenized with the model's rules (`tokenize`: lower-casing, a prompt, truncation on either side or
refused, token-id inputs), grouped into length-sorted micro-batches, run through the backend's forward,
pooled and normalised (`embed`), and put back in input order; `encode_stream` does the same chunk by
chunk. The torch Encoder, the numpy one, the corpus runner, the server and Ray all call this class;
what differs between them is the backend (torch_backend.py, numpy_backend.py) and how they are driven.

A backend offers: `xp` (its array module), `config`, `has_pooler`, `forward(arrays, pooler)` ->
(h (B, L, H) float32, m (B, L, 1), pooler output or None) from padded numpy arrays, `map(fn, batches)`
(the micro-batches, side by side where it pays), `empty(n, dim)` and `to_numpy(x)`.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings

from minibert.engine.options import EmbedOptions
from minibert.engine.pooling import POOLINGS, l2_normalize, pool
from minibert.fast.heap import release_free_memory
from minibert.settings import check_max_length, check_vocabulary, max_length_for


class InputTooLong(ValueError):
    """An input longer than the model's limit where the call said not to truncate (`truncate=False`)."""

    def __init__(self, index: int, max_length: int):
        super().__init__(f"input {index} is longer than the model's {max_length} tokens, and truncate is false")
        self.index, self.max_length = index, max_length


class TokenIds:
    """Model input made from token ids rather than by the tokenizer in one piece: ids given by a caller (the
    model's own wordpieces, between [CLS] and [SEP]), or an encoding cut on the left. Quacks like the
    `tokenizers.Encoding` fields the engine reads."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids):
        self.ids, self.type_ids = ids, [0] * len(ids)


class Engine:
    """Texts (or token ids) in, float32 vectors out, through `backend`'s forward pass.

    `pooling`, `normalize`, `max_length` (None: the model's limit), `prompt` and `lowercase` are the
    defaults a call's options start from; `max_batch_tokens` bounds the padded tokens of a micro-batch
    of long texts (None: only batch_size does)."""

    def __init__(
        self,
        backend,
        tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        prompt: str = "",
        lowercase: bool = False,
        max_batch_tokens: int | None = 2048,
    ):
        check_vocabulary(tokenizer, backend.config)
        self.backend, self.tokenizer, self.config = backend, tokenizer, backend.config
        self.lowercase = lowercase  # sentence-transformers' do_lower_case: lower the text before tokenizing
        self.max_batch_tokens = max_batch_tokens
        self.defaults = EmbedOptions(pooling=pooling, normalize=normalize, max_length=max_length, prompt=prompt)
        self.options()  # the defaults are checked against this model now, not at the first call

    @property
    def dim(self) -> int:
        """The vectors' dimension: the hidden size, or the vocabulary's for a masked-LM head's logits."""
        return self.config.vocab_size if self.backend.vocabulary else self.config.hidden_size

    def options(self, **overrides) -> EmbedOptions:
        """One call's options: each given value (None: the default) checked, max_length resolved to tokens."""
        options = dataclasses.replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        needs = POOLINGS[options.pooling][1]
        if needs == "pooler" and not self.backend.has_pooler:
            raise ValueError(f"pooling {options.pooling!r} needs pooler weights, and this checkpoint has none")
        if (needs == "vocabulary") != self.backend.vocabulary:
            kind = "a masked-LM head's logits (SparseEncoder)" if needs == "vocabulary" else "token vectors"
            raise ValueError(f"pooling {options.pooling!r} pools {kind}, which this encoder does not give")
        if options.max_length is not None:
            check_max_length(options.max_length, self.config)
        return dataclasses.replace(options, max_length=max_length_for(self.tokenizer, self.config, options.max_length))

    def tokenize(self, inputs: list, options: EmbedOptions) -> tuple[list, int]:
        """The model inputs for `inputs` (strings, pairs of strings, or lists of the model's token ids), each
        within options.max_length, and how many were cut; with options.truncate False, a longer input is an
        InputTooLong naming it."""
        limit, side = options.max_length, options.truncation_side
        out, truncated = [None] * len(inputs), 0
        pairs = [i for i, x in enumerate(inputs) if _is_pair(x)]
        paired = set(pairs)
        if pairs:  # BERT pairs: segment B gets token type 1; the longer text loses tokens first
            if options.prompt or side != "right":
                raise ValueError("pairs are cut on the right, longer text first, and take no prompt")
            firsts = [inputs[i][0] for i in pairs]
            seconds = [inputs[i][1] for i in pairs]
            if self.lowercase:
                firsts, seconds = [t.lower() for t in firsts], [t.lower() for t in seconds]
            whole = self.tokenizer.encode(firsts, seconds, truncation=False)
            cut = [i for i, e in zip(pairs, whole) if len(e.ids) > limit]
            if cut and not options.truncate:
                raise InputTooLong(cut[0], limit)
            encodings = self.tokenizer.encode(firsts, seconds, max_length=limit) if cut else whole
            for i, e in zip(pairs, encodings):
                out[i] = e
            truncated += len(cut)
        strings = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        if strings:
            texts = [options.prompt + inputs[i] for i in strings]
            if self.lowercase:
                texts = [t.lower() for t in texts]
            # Cut to one token more than the limit: a text that reaches it is too long, and is cut to the limit
            # below. Reading the tokenizer's own record of what it cut (`overflowing`) would build every
            # cut-off piece of a long text in Python, under the GIL: 140 ms for one 8 MB text, measured.
            encodings = self.tokenizer.encode(texts, max_length=limit + 1, direction=side)
            for i, e in zip(strings, encodings):
                out[i] = e
        vocab = self.config.vocab_size
        for i, x in enumerate(inputs):
            if out[i] is None:
                if not isinstance(x, list) or not x:
                    raise TypeError(
                        f"input {i} is {type(x).__name__} {x!r:.40}, not a string, a pair of strings or a list of "
                        "token ids"
                    )
                bad = next((t for t in x if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
                if bad is not None:
                    raise ValueError(f"input {i} holds token id {bad!r:.40}, outside the vocabulary [0, {vocab})")
                out[i] = TokenIds([self.tokenizer.cls_token_id, *x, self.tokenizer.sep_token_id])
        for i, e in enumerate(out):
            if i not in paired and len(e.ids) > limit:
                if not options.truncate:
                    raise InputTooLong(i, limit)
                kept = e.ids[len(e.ids) - limit + 1 : -1] if side == "left" else e.ids[1 : limit - 1]
                out[i] = TokenIds([e.ids[0], *kept, e.ids[-1]])  # [CLS] and [SEP] kept
                truncated += 1
        return out, truncated

    def embed(self, encodings: list, options: EmbedOptions, show_progress: bool | None = False):
        """(N, H) float32 vectors in the backend's arrays, rows in input order, for inputs already tokenized
        (`tokenize`): micro-batches of similar length under batch_size and max_batch_tokens, each run
        through the forward, pooled, and normalised where the options say."""
        backend, xp = self.backend, self.backend.xp
        batches = length_sorted_batches([len(e.ids) for e in encodings], options.batch_size, self.max_batch_tokens)
        need_pooler = POOLINGS[options.pooling][1] == "pooler"
        if show_progress is None:  # a bar on a terminal, for work that takes a while
            show_progress = len(batches) > 4 and sys.stderr.isatty()

        def one(rows):
            h, m, pooler = backend.forward(self.tokenizer.pad_arrays([encodings[i] for i in rows]), need_pooler)
            vectors = pool(xp, h, m, options.pooling, pooler)
            return rows, l2_normalize(xp, vectors) if options.normalize else vectors

        out = backend.empty(len(encodings), self.dim)
        for rows, vectors in _progress(backend.map(one, batches), show_progress, len(encodings)):
            out[rows] = vectors
        return out

    def token_vectors(self, encodings: list, options: EmbedOptions) -> list:
        """Each input's last-layer token vectors, (its tokens, H) float32 in the backend's arrays, without
        padding: sentence-transformers' output_value="token_embeddings"."""
        backend = self.backend
        batches = length_sorted_batches([len(e.ids) for e in encodings], options.batch_size, self.max_batch_tokens)

        def one(rows):
            h, _, _ = backend.forward(self.tokenizer.pad_arrays([encodings[i] for i in rows]), False)
            return rows, [h[j, : len(encodings[i].ids)] for j, i in enumerate(rows)]

        out = [None] * len(encodings)
        for rows, vectors in backend.map(one, batches):
            for i, v in zip(rows, vectors):
                out[i] = v
        return out

    def finish(self, vectors, options: EmbedOptions):
        """Raw pooled vectors (embed with normalize=False) as `options` asks for them: the server computes
        the texts of many requests together and finishes each request's vectors by its own options."""
        return l2_normalize(self.backend.xp, vectors) if options.normalize else vectors

    def encode(self, texts: list[str], options: EmbedOptions, show_progress: bool | None = None):
        """(vectors as numpy float32, {tokens, truncated, max_length}) for a list of strings."""
        encodings, truncated = self.tokenize(texts, options)
        vectors = self.backend.to_numpy(self.embed(encodings, options, show_progress))
        tokens = sum(len(e.ids) for e in encodings)
        return vectors, {"tokens": tokens, "truncated": truncated, "max_length": options.max_length}

    def encode_stream(self, texts, *, chunk_size: int = 4096, stats: dict | None = None, **overrides):
        """Embed any iterable of strings (a generator over a file, say) chunk by chunk: yields
        (start_index, vectors) in input order, vectors (n, H) for the texts from start_index on. Memory
        stays bounded by `chunk_size`, not by the corpus; the vectors equal `encode`'s. `overrides` are
        `options`' keywords; `stats`, if given, gets running totals of texts, tokens and truncated texts.
        One truncation warning comes at the end. Between chunks the C heap's free pages go back to the OS
        (minibert/fast/heap.py), so resident memory does not creep."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if isinstance(texts, str):
            raise TypeError("encode_stream takes an iterable of strings; for one text use encode")
        overrides.pop("show_progress", None)
        options = self.options(**overrides)
        stats = {} if stats is None else stats
        stats.update(texts=0, tokens=0, truncated=0)
        chunk, start = [], 0
        iterator = iter(texts)
        while True:
            for text in iterator:
                if not isinstance(text, str):
                    raise TypeError(f"texts[{start + len(chunk)}] is {type(text).__name__} {text!r:.40}, not a string")
                chunk.append(text)
                if len(chunk) == chunk_size:
                    break
            if not chunk:
                break
            vectors, chunk_stats = self.encode(chunk, options, show_progress=False)
            stats["texts"] += len(chunk)
            stats["tokens"] += chunk_stats["tokens"]
            stats["truncated"] += chunk_stats["truncated"]
            release_free_memory()  # otherwise the heap fragments and resident memory creeps chunk by chunk
            yield start, vectors
            start += len(chunk)
            chunk = []
        warn_truncated(stats["truncated"], stats["texts"], options.max_length)


def _is_pair(x) -> bool:
    return isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, str) for t in x)


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, so padding stays small: at most
    `batch_size` texts, and at most `max_tokens` padded tokens where that allows more than one text."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        size = batch_size
        if max_tokens:
            size = max(1, min(batch_size, max_tokens // lengths[order[start]]))
        batches.append(order[start : start + size])
        start += size
    return batches


def warn_truncated(truncated: int, total: int, max_length: int, stacklevel: int = 3) -> None:
    """The one warning a call gives when it truncated texts."""
    if truncated:
        warnings.warn(
            f"{truncated} of {total} texts were longer than {max_length} tokens and were truncated",
            stacklevel=stacklevel,
        )


def _progress(results, enabled: bool, total: int):
    """The batches' (rows, vectors) as they come, with one progress bar counting texts where `enabled`."""
    if not enabled:
        yield from results
        return
    from tqdm.auto import tqdm

    with tqdm(desc="Encoding", unit="text", total=total, file=sys.stderr) as bar:
        for rows, vectors in results:
            yield rows, vectors
            bar.update(len(rows))
