"""Embedding a corpus larger than memory into a folder of shards that a crash cannot corrupt.

    vectors/
      manifest.json                     what was embedded, how, and which shards are done
      shard-00000.npy                   float32 (rows, dim), one chunk of input rows
      shard-00000.ids.json              the ids of those rows (line numbers, or the --id-field values)
      ...

A shard is written under a temporary name, fsynced, renamed, and only then entered in the manifest,
which is itself replaced atomically. A kill at any instant leaves whole shards and a manifest naming
exactly the finished ones; `resume` continues after the last of them, and refuses an input, model or
setting that changed. `read_vectors(folder)` maps the shards back as one array-like, in input order.

Inputs are read as a stream: plain text (one text per line, an empty line an empty text), JSONL (a
text field and an optional id field per line), or Parquet (the same two columns, through pyarrow, the
`parquet` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "minibert-vectors/1"
MANIFEST = "manifest.json"


class ResumeError(ValueError):
    """A resumed run whose input, model or settings differ from the recorded ones."""


# --- inputs ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    path: str  # "-" for stdin
    format: str = "text"  # text, jsonl, parquet
    text_field: str = "text"
    id_field: str | None = None
    errors: str = "strict"  # a line that is not UTF-8: "strict" (an error naming it) or "replace"

    def fingerprint(self) -> dict:
        """Size, modification time and the sha256 of the first MiB: enough to notice a changed input."""
        if self.path == "-":
            return {"path": "-", "format": self.format}
        path = Path(self.path)
        stat = path.stat()
        with open(path, "rb") as f:
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()
        return {
            "path": str(path.resolve()),
            "format": self.format,
            "size": stat.st_size,
            "mtime": stat.st_mtime,
            "head_sha256": head,
            "text_field": self.text_field,
            "id_field": self.id_field,
        }

    def rows(self, skip: int = 0) -> Iterator[tuple[object, str]]:
        """(id, text) for every row after the first `skip`, streamed."""
        if self.format == "parquet":
            yield from self._parquet(skip)
            return
        stream = os.fdopen(os.dup(0), "rb") if self.path == "-" else open(self.path, "rb")
        with stream:
            for number, raw in enumerate(stream, start=1):
                if number == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                if number <= skip:
                    continue
                line = raw.removesuffix(b"\n").removesuffix(b"\r")
                try:
                    text = line.decode("utf-8", errors=self.errors)
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{self.name}: line {number} is not UTF-8 text (byte {e.start}); "
                        "--errors replace puts U+FFFD in its place"
                    ) from None
                if self.format == "text":
                    yield number - 1, text
                else:
                    yield self._json_row(number, text)

    @property
    def name(self) -> str:
        return "stdin" if self.path == "-" else self.path

    def _json_row(self, number: int, line: str) -> tuple[object, str]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.name}: line {number} is not JSON ({e.msg})") from None
        if not isinstance(row, dict) or self.text_field not in row:
            raise ValueError(f"{self.name}: line {number} has no field {self.text_field!r}")
        text = row[self.text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"{self.name}: line {number}: field {self.text_field!r} is {type(text).__name__}, not a string"
            )
        if self.id_field is None:
            return number - 1, text
        if self.id_field not in row:
            raise ValueError(f"{self.name}: line {number} has no field {self.id_field!r}")
        return row[self.id_field], text

    def _parquet(self, skip: int) -> Iterator[tuple[object, str]]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("Parquet input needs pyarrow: pip install 'minibert-encoder[parquet]'") from None
        table = pq.ParquetFile(self.path)
        columns = [self.text_field] + ([self.id_field] if self.id_field else [])
        missing = [c for c in columns if c not in table.schema_arrow.names]
        if missing:
            raise ValueError(f"{self.path}: no column {missing[0]!r} (columns: {', '.join(table.schema_arrow.names)})")
        row = 0
        for batch in table.iter_batches(columns=columns, batch_size=8192):
            texts = batch.column(self.text_field).to_pylist()
            ids = batch.column(self.id_field).to_pylist() if self.id_field else range(row, row + len(texts))
            for id_, text in zip(ids, texts):
                if row >= skip:
                    if not isinstance(text, str):
                        raise ValueError(
                            f"{self.path}: row {row}: column {self.text_field!r} is {type(text).__name__}, not a string"
                        )
                    yield id_, text
                row += 1


def count_rows(source: Source) -> int | None:
    """The number of rows when it can be had cheaply (a file of at most 1 GiB, or Parquet metadata)."""
    if source.path == "-":
        return None
    if source.format == "parquet":
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(source.path).metadata.num_rows
        except ImportError:
            return None
    size = Path(source.path).stat().st_size
    if size > 1 << 30:
        return None
    count, last = 0, b"\n"
    with open(source.path, "rb") as f:
        while block := f.read(1 << 22):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


# --- the folder --------------------------------------------------------------------------------------------


def weights_sha256(folder: Path) -> str:
    """sha256 over the model folder's weight files (names and bytes), in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin") or ".ckpt." in p.name):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, value) -> None:
    from minibert.formats.atomic import write_text

    write_text(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def npy_bytes(vectors: np.ndarray) -> tuple[bytes, memoryview]:
    """The .npy header and data of `vectors`, in C order (what the header says), without a copy where the
    array already is."""
    import io

    vectors = np.ascontiguousarray(vectors)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(vectors))
    return buffer.getvalue(), memoryview(vectors).cast("B")


def write_vectors(out, fmt: str, texts: list[str], vectors: np.ndarray) -> None:
    """`vectors` as one file to the binary stream `out`: npy, or one line per text, jsonl ({"text",
    "embedding"}, 7 decimals) or tsv (9 significant digits, which float32 round-trips through)."""
    if fmt == "npy":
        for part in npy_bytes(vectors):
            out.write(part)
        return
    for text, vector in zip(texts, vectors):
        if fmt == "jsonl":
            line = json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False)
        else:
            line = "\t".join(f"{x:.9g}" for x in vector)
        out.write((line + "\n").encode("utf-8"))


def _write_npy(path: Path, vectors: np.ndarray) -> str:
    """Write `vectors` as .npy, atomically; returns the file's sha256, taken from the bytes written."""
    from minibert.formats.atomic import atomic_open

    header, data = npy_bytes(vectors)
    with atomic_open(path) as f:
        f.write(header)
        f.write(data)
    digest = hashlib.sha256(header)
    digest.update(data)
    return digest.hexdigest()


def input_format(path: str, given: str | None = None) -> str:
    """An input's format: `given`, or jsonl / parquet from the file's extension, else text."""
    return given or {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(path).suffix.lower(), "text")


def run_record(encoder, folder, *, pooling=None, normalize=None, max_length=None, batch_size=32, quantize=None):
    """(settings, model) as a folder's manifest records them and `resume` compares them: encode's options
    resolved against the encoder's defaults, and the model folder with the sha256 of its weights."""
    pooling, normalize, max_length = encoder.options(pooling, normalize, max_length, batch_size)
    settings = {
        "pooling": pooling,
        "normalize": normalize,
        "max_length": max_length,
        "batch_size": batch_size,
        "dtype": "float32",
        "quantize": quantize,
    }
    return settings, {"folder": str(Path(folder).resolve()), "weights_sha256": weights_sha256(folder)}


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}: not a minibert vectors folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    return manifest


def embed_to_folder(
    encoder,
    source: Source,
    folder,
    *,
    settings: dict,
    model: dict,
    chunk_size: int = 4096,
    resume: bool = False,
    progress=None,
    stats: dict | None = None,
) -> dict:
    """Embed `source` into `folder`, one shard per `chunk_size` rows; returns the final manifest.

    `settings`: encode's options (pooling, normalize, max_length, batch_size) and the model's dtype and
    quantization, recorded and compared on resume; `model`: {"folder", "weights_sha256"}.
    `progress(rows_done)` is called after each shard."""
    folder = Path(folder)
    fingerprint = source.fingerprint()
    if resume and (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        for what, recorded, now in (
            ("input", manifest["input"], fingerprint),
            ("model", manifest["model"], model),
            ("settings", manifest["settings"], settings),
            ("chunk size", manifest["chunk_size"], chunk_size),
        ):
            if recorded != now:
                changed = (
                    [k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k)]
                    if isinstance(now, dict)
                    else [f"{recorded} -> {now}"]
                )
                raise ResumeError(
                    f"{folder}: cannot resume: the {what} changed since the recorded run "
                    f"({', '.join(sorted(map(str, changed)))}); embed into a new folder"
                )
        if source.path == "-":
            raise ResumeError("cannot resume from stdin: the rows already embedded cannot be skipped reliably")
    else:
        if folder.is_dir() and any(folder.iterdir()):
            raise FileExistsError(f"{folder} is not empty; choose a new folder, or --resume a run recorded there")
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "model": model,
            "settings": settings,
            "dim": encoder.dim,
            "input": fingerprint,
            "chunk_size": chunk_size,
            "rows": 0,
            "complete": False,
            "shards": [],
        }
        _write_json(folder / MANIFEST, manifest)
    if manifest["complete"]:
        return manifest

    options = {k: settings[k] for k in ("pooling", "normalize", "max_length", "batch_size") if k in settings}
    done = manifest["rows"]
    rows = source.rows(skip=done)
    ids: list = []

    def texts():
        for id_, text in rows:
            ids.append(id_)
            yield text

    stats = {} if stats is None else stats
    for _, vectors in encoder.encode_stream(texts(), chunk_size=chunk_size, stats=stats, **options):
        index = len(manifest["shards"])
        shard, id_file = folder / f"shard-{index:05d}.npy", folder / f"shard-{index:05d}.ids.json"
        chunk_ids, ids[:] = ids[: len(vectors)], ids[len(vectors) :]
        digest = _write_npy(shard, vectors.astype(np.float32, copy=False))
        _write_json(id_file, chunk_ids)
        manifest["shards"].append(
            {"file": shard.name, "ids": id_file.name, "start": done, "rows": len(vectors), "sha256": digest}
        )
        done += len(vectors)
        manifest["rows"] = done
        _write_json(folder / MANIFEST, manifest)  # only now is the shard counted
        if progress is not None:
            progress(done)
    manifest["complete"] = True
    _write_json(folder / MANIFEST, manifest)
    return manifest


class Vectors:
    """The shards of a vectors folder as one read-only (rows, dim) array-like, memory-mapped: len, shape,
    indexing with ints, slices and index arrays, and np.asarray() for a copy in memory."""

    def __init__(self, folder, verify: bool = False):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self._parts = []
        for entry in self.manifest["shards"]:
            path = self.folder / entry["file"]
            if verify and _sha256(path) != entry["sha256"]:
                raise ValueError(f"{path}: sha256 differs from the manifest's: the shard is damaged")
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.shape != (entry["rows"], self.manifest["dim"]):
                raise ValueError(
                    f"{path}: shape {array.shape}, but the manifest says ({entry['rows']}, {self.manifest['dim']})"
                )
            self._parts.append(array)
        self._ends = np.cumsum([len(p) for p in self._parts])
        self.shape = (int(self._ends[-1]) if len(self._ends) else 0, self.manifest["dim"])
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def ids(self) -> list:
        out = []
        for entry in self.manifest["shards"]:
            out += json.loads((self.folder / entry["ids"]).read_text(encoding="utf-8"))
        return out

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {index} is outside {len(self)} rows")
            part = int(np.searchsorted(self._ends, i, side="right"))
            return np.asarray(self._parts[part][i - (self._ends[part - 1] if part else 0)])
        if isinstance(index, slice):
            rows = np.arange(*index.indices(len(self)))
        else:
            rows = np.arange(len(self))[index]  # index arrays and masks, checked by numpy
        part_of = np.searchsorted(self._ends, rows, side="right")
        out = np.empty((len(rows), self.shape[1]), np.float32)
        for part in np.unique(part_of):
            chosen = part_of == part
            out[chosen] = self._parts[part][rows[chosen] - (self._ends[part - 1] if part else 0)]
        return out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate(self._parts) if self._parts else np.empty((0, self.shape[1]), np.float32)
        return whole.astype(dtype) if dtype is not None else whole

    def __iter__(self):
        for part in self._parts:
            yield from part


def read_vectors(folder, verify: bool = False) -> Vectors:
    """The vectors of a folder written by `minibert embed -o DIR/`, in input order (memory-mapped).
    `verify=True` also checks every shard's sha256 against the manifest."""
    return Vectors(folder, verify=verify)
