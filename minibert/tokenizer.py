"""WordPiece tokenization on the `tokenizers` library: text in, the three id tensors BERT takes out."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

from minibert.config import read_json
from minibert.formats.hub import resolve

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # a vocab.txt's, made special


# What each special token is called where a tokenizer's configuration does not say: BERT's WordPiece
# vocabularies, then the SentencePiece and byte-level BPE vocabularies of RoBERTa, XLM-R and MPNet.
SPECIAL_ROLES = ("cls", "sep", "pad", "unk", "mask")
DEFAULT_SPECIALS = (
    {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"},
    {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"},
)


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer`: its normalisation, its model (WordPiece, Unigram or BPE), and its
    template of special tokens for one text and for a pair ([CLS] A [SEP] B [SEP] for BERT, <s> A </s></s>
    B </s> for RoBERTa). Which tokens play the roles of cls, sep, pad, unk and mask comes from the folder's
    tokenizer configuration, else from the names BERT or RoBERTa give them.

    >>> tok = Tokenizer.from_pretrained("path/to/bert")
    >>> batch = tok(["a first text", "a second"], ["its pair", "another"])
    >>> batch["input_ids"].shape, batch["token_type_ids"].shape, batch["attention_mask"].shape
    """

    def __init__(self, backend, model_max_length: int = 512, specials: dict | None = None, settings=None):
        self.backend = backend
        # Truncation is a setting of the shared `tokenizers` object: a call sets it and encodes under this
        # lock, so concurrent calls with different max_length cannot see each other's setting.
        self._lock = threading.Lock()
        # The file's own truncation and padding settings (all-MiniLM ships "pad everything to 128")
        # would silently change what the caller asked for; each call sets its own.
        self.backend.no_truncation()
        self.backend.no_padding()
        self._truncation = None  # what the backend is set to: None, or (max_length, direction)
        self.model_max_length = model_max_length
        self.settings = dict(settings or {})  # the folder's tokenizer_config.json, written back by save()
        self.specials = resolve_specials(backend, specials)  # role -> token
        unk = getattr(backend.model, "unk_token", None)  # WordPiece's stand-in for words it cannot split
        if unk is not None and unk not in backend.get_vocab(with_added_tokens=False):
            raise ValueError(
                f"the WordPiece vocabulary lacks its unknown token {unk!r}, which a word it cannot "
                "split into wordpieces needs"
            )
        ids = {role: backend.token_to_id(token) for role, token in self.specials.items()}
        self.pad_token_id = ids["pad"]
        self.mask_token_id = ids.get("mask")  # None where the vocabulary has no mask token
        self.unk_token_id = ids.get("unk")
        self.cls_token_id = ids["cls"]  # what every input starts with
        self.sep_token_id = ids["sep"]  # and ends with
        self.mask_token = self.specials.get("mask")

    # --- construction ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        *,
        lowercase: bool | None = None,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> Tokenizer:
        """`tokenizer.json` when the folder has one, else `vocab.txt` (+ `tokenizer_config.json`).

        The keyword arguments override the folder's normalisation settings. A folder with only
        `vocab.txt` (as Google's releases ship) takes lower-casing from its name (uncased, cased,
        chinese) or from `lowercase=`.
        """
        folder = resolve(name_or_path, revision=revision, local_files_only=local_files_only)
        settings = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        settings = settings if isinstance(settings, dict) else {}
        max_length = settings.get("model_max_length")
        if not isinstance(max_length, int) or not 0 < max_length <= 1_000_000:
            max_length = 512  # unset, or the "very large integer" placeholder of some configs
        overrides = {
            "lowercase": lowercase,
            "strip_accents": strip_accents,
            "handle_chinese_chars": tokenize_chinese_chars,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}

        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as Backend

            spec = read_json(folder / "tokenizer.json")
            if overrides:
                if (spec.get("normalizer") or {}).get("type") != "BertNormalizer":
                    raise ValueError(f"{folder / 'tokenizer.json'}: no BertNormalizer to apply {overrides} to")
                spec["normalizer"].update(overrides)
            try:
                backend = Backend.from_str(json.dumps(spec))
            except Exception as e:
                raise ValueError(f"{folder / 'tokenizer.json'}: not a valid tokenizer file ({e})") from None
            specials = configured_specials(folder, settings)
            try:
                return cls(backend, max_length, specials, settings)
            except ValueError as e:
                raise ValueError(f"{folder / 'tokenizer.json'}: {e}") from None

        if not (folder / "vocab.txt").is_file():
            raise FileNotFoundError(f"{folder} holds neither tokenizer.json nor vocab.txt")
        if lowercase is None:
            lowercase = settings.get("do_lower_case", _lowercase_from_name(folder))
        if lowercase is None:
            raise ValueError(
                f"{folder} has vocab.txt but no tokenizer_config.json, and its name does not say cased or "
                "uncased: pass lowercase=True or lowercase=False (--uncased or --cased on the command line)"
            )
        if strip_accents is None:
            strip_accents = settings.get("strip_accents")
        if tokenize_chinese_chars is None:
            tokenize_chinese_chars = settings.get("tokenize_chinese_chars", True)
        return cls.from_vocab(
            folder / "vocab.txt",
            lowercase=lowercase,
            strip_accents=strip_accents,
            tokenize_chinese_chars=tokenize_chinese_chars,
            model_max_length=max_length,
        )

    @classmethod
    def from_vocab(
        cls,
        vocab_path,
        *,
        lowercase: bool,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        model_max_length: int = 512,
    ) -> Tokenizer:
        """Build BERT's tokenizer from a `vocab.txt`, one wordpiece per line, the line number its id."""
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

        vocab, lines = {}, {}
        try:  # utf-8-sig: a byte-order mark at the start is not part of the first token
            with open(vocab_path, encoding="utf-8-sig") as f:
                tokens = [line.rstrip("\n") for line in f]
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{vocab_path} is not UTF-8 text (byte {e.start}): a vocab.txt holds one UTF-8 wordpiece per line"
            ) from None
        for i, token in enumerate(tokens):
            if token in vocab:  # the last line wins, as in transformers' BertTokenizer (fast)
                warnings.warn(
                    f"{vocab_path}: {token!r} is on line {lines[token] + 1} and again on line {i + 1}; "
                    f"it gets id {i}, and id {lines[token]} decodes to nothing",
                    stacklevel=3,
                )
            vocab[token], lines[token] = i, i
        if not vocab:
            raise ValueError(f"{vocab_path} is empty")
        for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
            if token not in vocab:
                raise ValueError(f"{vocab_path} has no {token} token")

        backend = Backend(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        # strip_accents=None means "follow lowercase", as in the original BasicTokenizer.
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # split on whitespace and punctuation
        cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # the second segment and its [SEP] get token type 1
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        backend.add_special_tokens([t for t in SPECIAL_TOKENS if t in vocab])
        return cls(backend, model_max_length)

    # --- use ---------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(
        self, texts, text_pairs=None, *, max_length: int | None = None, truncation: bool = True, padding: bool = True
    ) -> dict:
        """Tokenize a text or a list of texts (and their pairs) into `input_ids`, `token_type_ids` and
        `attention_mask`, each a (B, L) int64 tensor. Padding is to the longest in the batch;
        truncation (longest first, for pairs) is to `max_length`, by default the model's maximum."""
        encodings = self.encode(texts, text_pairs, max_length=max_length, truncation=truncation)
        if not padding and len({len(e.ids) for e in encodings}) > 1:
            lengths = sorted({len(e.ids) for e in encodings})
            raise ValueError(f"texts tokenize to different lengths {lengths}; use padding=True")
        return self.collate(encodings)

    def encode(
        self,
        texts,
        text_pairs=None,
        *,
        max_length: int | None = None,
        truncation: bool = True,
        direction: str = "right",
    ) -> list:
        """The `tokenizers.Encoding` of each text (or pair), unpadded; `.overflowing` is non-empty where
        truncation cut something off (reading it builds every cut-off piece: for a long text, many). A cut
        on the `direction` "left" keeps the end of the text."""
        texts = as_text_list(texts, "texts")
        if text_pairs is not None:
            text_pairs = as_text_list(text_pairs, "text_pairs")
            if len(text_pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
        limit = self.model_max_length if max_length is None else max_length
        specials = 3 if text_pairs is not None else 2
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < specials:
            raise ValueError(f"max_length must be an integer >= {specials} (room for [CLS]/[SEP]), got {limit!r}")

        inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
        with self._lock:
            truncate = (limit, direction) if truncation else None
            if truncate != self._truncation:  # setting it costs as much as encoding a short query
                if truncate:
                    self.backend.enable_truncation(limit, strategy="longest_first", direction=direction)
                else:
                    self.backend.no_truncation()
                self._truncation = truncate
            try:
                return self.backend.encode_batch(inputs)
            except Exception as e:  # e.g. a pair whose second text cannot be truncated enough
                _check_unicode(texts, "texts")
                _check_unicode(text_pairs or [], "text_pairs")
                raise ValueError(f"could not tokenize to max_length {limit}: {e}") from None

    def collate(self, encodings) -> dict:
        """Pad encodings to the longest into (B, L) int64 tensors."""
        import torch

        return {name: torch.from_numpy(array) for name, array in self.pad_arrays(encodings).items()}

    def pad_arrays(self, encodings) -> dict:
        """Pad encodings to the longest into (B, L) int64 numpy arrays: input_ids, token_type_ids and
        attention_mask (what `collate` gives as tensors, without torch)."""
        import numpy as np

        width = max((len(e.ids) for e in encodings), default=0)
        input_ids = np.full((len(encodings), width), self.pad_token_id, dtype=np.int64)
        token_type_ids = np.zeros((len(encodings), width), dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            input_ids[i, :n] = e.ids
            token_type_ids[i, :n] = e.type_ids
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}

    def tokenize(self, text: str, text_pair: str | None = None) -> list[str]:
        """The wordpieces of one text (or pair), special tokens included."""
        with self._lock:
            self.backend.no_truncation()
            self._truncation = None
            return self.backend.encode(text, text_pair).tokens

    def __getstate__(self):  # copies and pickles get a lock of their own
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def save(self, directory) -> None:
        """Write vocab.txt, tokenizer.json and tokenizer_config.json, as transformers' BertTokenizer reads them;
        a tokenizer of another kind (Unigram, BPE) as tokenizer.json and its tokenizer_config.json."""
        from minibert.formats.atomic import atomic_path, write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if type(self.backend.model).__name__ != "WordPiece" or type(self.backend.normalizer).__name__ != (
            "BertNormalizer"
        ):  # a SentencePiece or BPE tokenizer: its own file, and its configuration as the folder gave it
            with atomic_path(directory / "tokenizer.json") as tmp:
                self.backend.save(str(tmp))
            settings = {
                **self.settings,
                "model_max_length": self.model_max_length,
                **{f"{role}_token": token for role, token in self.specials.items()},
            }
            write_text(directory / "tokenizer_config.json", json.dumps(settings, indent=2) + "\n")
            return
        vocab = sorted(self.backend.get_vocab(with_added_tokens=True).items(), key=lambda item: item[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise ValueError("the vocabulary ids are not 0..n-1 without gaps; it cannot be written as vocab.txt")
        write_text(directory / "vocab.txt", "".join(token + "\n" for token, _ in vocab))
        with atomic_path(directory / "tokenizer.json") as tmp:
            self.backend.save(str(tmp))
        normalizer = self.backend.normalizer
        settings = {
            "tokenizer_class": self.settings.get("tokenizer_class", "BertTokenizer"),  # MPNet's is its own
            "do_lower_case": normalizer.lowercase,
            "strip_accents": normalizer.strip_accents,
            "tokenize_chinese_chars": normalizer.handle_chinese_chars,
            "model_max_length": self.model_max_length,
            **{f"{role}_token": token for role, token in self.specials.items()},  # [CLS] ..., or MPNet's <s> ...
        }
        write_text(directory / "tokenizer_config.json", json.dumps(settings, indent=2) + "\n")

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.backend.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens) -> list[int]:
        unk = self.unk_token_id
        return [self.backend.token_to_id(t) if self.backend.token_to_id(t) is not None else unk for t in tokens]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def as_text_list(texts, name: str) -> list[str]:
    """A string becomes a one-item list; anything that is not a string is refused by its index."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__} {t!r:.40}, not a string")
    return list(texts)


def _check_unicode(texts: list[str], name: str) -> None:
    """Name the text a tokenizer failure came from when it is not valid Unicode: a lone surrogate, which
    is what Python makes of invalid UTF-8 in a command-line argument."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{name}[{i}] is not valid Unicode text: {text[e.start]!r} at character {e.start} "
                "(invalid UTF-8 in the input?)"
            ) from None


def _lowercase_from_name(folder: os.PathLike) -> bool | None:
    """Google's folder names say it: uncased_L-12_H-768_A-12, cased_L-..., chinese_L-... (lower-cased)."""
    name = Path(folder).resolve().name.lower()
    if "uncased" in name or "chinese" in name:
        return True
    if "cased" in name:
        return False
    return None


def _token_text(value):
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def configured_specials(folder: Path, settings: dict) -> dict:
    """The special tokens a folder's tokenizer_config.json (or special_tokens_map.json) names: role -> token."""
    found = {}
    sources = [settings]
    if (folder / "special_tokens_map.json").is_file():
        mapping = read_json(folder / "special_tokens_map.json")
        sources.append(mapping if isinstance(mapping, dict) else {})
    for source in sources:
        for role in SPECIAL_ROLES:
            token = _token_text(source.get(f"{role}_token"))
            if token is not None:
                found.setdefault(role, token)
    return found


def resolve_specials(backend, given: dict | None) -> dict:
    """role -> token for the cls, sep and pad roles (required) and unk and mask (where the vocabulary has them):
    the tokens `given` names, else BERT's names, else RoBERTa's; each must be in the vocabulary."""
    vocab = backend.get_vocab(with_added_tokens=True)
    given = dict(given or {})
    for role, token in given.items():
        if token not in vocab:
            raise ValueError(f"its {role} token {token!r} is not in the vocabulary")
    for defaults in DEFAULT_SPECIALS:
        if all(defaults[role] in vocab for role in ("cls", "sep", "pad") if role not in given):
            for role in SPECIAL_ROLES:
                if role not in given and defaults[role] in vocab:
                    given[role] = defaults[role]
            break
    missing = [role for role in ("cls", "sep", "pad") if role not in given]
    if missing:
        names = " or ".join(repr(d[missing[0]]) for d in DEFAULT_SPECIALS)
        raise ValueError(
            f"the vocabulary has no {missing[0]} token ({names}), and the tokenizer configuration names none"
        )
    return given
