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
import itertools
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minibert.engine.core import warn_truncated
from minibert.fast.heap import release_free_memory

FORMAT = "minibert-vectors/1"
MANIFEST = "manifest.json"


NO_PYARROW = "Parquet input needs pyarrow: pip install 'minibert-encoder[parquet]' (from a clone: '.[parquet]')"


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
            raise ImportError(NO_PYARROW) from None
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
                    if not isinstance(id_, (str, int, float, bool, type(None))):  # what an ids file can hold
                        raise ValueError(
                            f"{self.path}: row {row}: column {self.id_field!r} is {type(id_).__name__}; ids must "
                            "be strings or numbers (cast the column, e.g. to string, first)"
                        )
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
    options = encoder.engine.options(pooling=pooling, normalize=normalize, max_length=max_length, batch_size=batch_size)
    settings = {
        "pooling": options.pooling,
        "normalize": options.normalize,
        "max_length": options.max_length,
        "batch_size": options.batch_size,
        "dtype": str(next(encoder.model.parameters()).dtype).removeprefix("torch."),
        "quantize": quantize,
    }
    return settings, {"folder": str(Path(folder).resolve()), "weights_sha256": weights_sha256(folder)}


def read_manifest(folder) -> dict:
    """A folder's manifest, checked: every key the format needs, of its type, and shards that follow on from
    each other (each starting where the one before ended) and add up to the rows it claims."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} holds no {MANIFEST}: not a minibert vectors folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest")
    _check_keys(manifest, MANIFEST_KEYS, path, "")
    if manifest["dim"] < 1:
        raise ValueError(f"{path}: dim must be positive, got {manifest['dim']}")
    rows = 0
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise ValueError(f"{path}: shards[{i}] is {type(shard).__name__}, not an object")
        _check_keys(shard, SHARD_KEYS, path, f"shards[{i}].")
        if shard["start"] != rows or shard["rows"] < 1:
            raise ValueError(
                f"{path}: shards[{i}] starts at row {shard['start']} with {shard['rows']} rows, but the shards "
                f"before it end at row {rows}"
            )
        rows += shard["rows"]
    if rows != manifest["rows"]:
        raise ValueError(f"{path}: the shards hold {rows} rows, but the manifest says {manifest['rows']}")
    return manifest


# The manifest's keys and their types (bool is refused where an int is meant).
MANIFEST_KEYS = {
    "model": dict,
    "settings": dict,
    "dim": int,
    "input": dict,
    "chunk_size": int,
    "rows": int,
    "complete": bool,
    "shards": list,
}
SHARD_KEYS = {"file": str, "ids": str, "start": int, "rows": int, "sha256": str}


def _check_keys(values: dict, keys: dict, path: Path, prefix: str) -> None:
    for key, kind in keys.items():
        if key not in values:
            raise ValueError(f"{path}: {prefix}{key} is missing")
        value = values[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{path}: {prefix}{key} is {type(value).__name__} {value!r:.40}, not {kind.__name__}")
        if kind is int and value < 0:
            raise ValueError(f"{path}: {prefix}{key} is {value}, a negative count")


def shard_path(folder: Path, name: str, manifest_path: Path) -> Path:
    """`folder / name` for a file a manifest names, refused unless it is a plain file name whose resolved
    path (through any symlink) stays inside the folder."""
    bad = name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name
    path = folder / name
    if bad or path.resolve().parent != folder.resolve():
        raise ValueError(f"{manifest_path}: {name!r} is not a file inside {folder}")
    return path


def check_shard(folder: Path, shard: dict, dim: int, manifest_path: Path) -> Path:
    """A shard's file as its manifest entry describes it (read from its header, not its data): there,
    float32, C order, (rows, dim), and as long as that says. Returns its path."""
    path = shard_path(folder, shard["file"], manifest_path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f".npy version {version}")
            shape, fortran, dtype = read_header[version](f)
            offset = f.tell()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: shard missing, though {manifest_path} counts it as done") from None
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npy shard ({e})") from None
    if dtype != np.dtype("<f4") or fortran:
        raise ValueError(f"{path}: holds {dtype}{' in Fortran order' if fortran else ''}; shards are float32")
    if shape != (shard["rows"], dim):
        raise ValueError(f"{path}: shape {shape}, but {manifest_path} says ({shard['rows']}, {dim})")
    size, expected = path.stat().st_size, offset + shard["rows"] * dim * 4
    if size != expected:
        raise ValueError(f"{path}: {size} bytes, but a ({shard['rows']}, {dim}) float32 shard takes {expected}")
    return path


def read_ids(folder: Path, shard: dict, manifest_path: Path) -> list:
    """A shard's ids: a JSON list, one per row."""
    path = shard_path(folder, shard["ids"], manifest_path)
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ids file missing, though {manifest_path} names it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(ids, list) or len(ids) != shard["rows"]:
        what = f"{len(ids)} ids" if isinstance(ids, list) else f"a {type(ids).__name__}"
        raise ValueError(f"{path}: holds {what}, but its shard has {shard['rows']} rows")
    return ids


def check_folder(folder, manifest: dict) -> None:
    """Every shard and ids file the manifest counts, checked as read_vectors checks them."""
    folder, path = Path(folder), Path(folder) / MANIFEST
    for shard in manifest["shards"]:
        check_shard(folder, shard, manifest["dim"], path)
        read_ids(folder, shard, path)


ENCODE_ROWS = 512  # texts per encode call at most: shards are cut only between such chunks
SHARD_SECONDS = 30.0  # a shard is written at least this often, so that a kill keeps a small run's work too


def pieces(texts, start: int, chunk_size: int):
    """The texts from row `start` on, in the pieces they are encoded in: at most ENCODE_ROWS rows, never across
    a multiple of `chunk_size`, and counted from the start of each chunk, so that a shard holds exactly
    `chunk_size` rows and a run resumed after any shard encodes the same pieces as an uninterrupted one."""
    texts, position = iter(texts), start
    while True:
        size = min(ENCODE_ROWS - position % chunk_size % ENCODE_ROWS, chunk_size - position % chunk_size)
        piece = list(itertools.islice(texts, size))
        if not piece:
            return
        yield piece
        position += len(piece)


def embed_to_folder(
    encoder,
    source: Source,
    folder,
    *,
    settings: dict,
    model: dict,
    chunk_size: int | None = None,
    resume: bool = False,
    force: bool = False,
    progress=None,
    stats: dict | None = None,
    shard_seconds: float = SHARD_SECONDS,
) -> dict:
    """Embed `source` into `folder` as shards of at most `chunk_size` rows (4096 unless given; on resume the
    recorded size), each written within about `shard_seconds` of the last; returns the final manifest.

    `settings`: encode's options (pooling, normalize, max_length, batch_size) and the model's dtype and
    quantization, recorded and compared on resume; `model`: {"folder", "weights_sha256"}. `force` starts
    over in a folder that holds a run (its manifest, shards and ids files go; anything else is refused).
    `progress(rows_done)` is called as rows are embedded.

    Texts are encoded in `pieces`, and shards are cut only between pieces, so a shard holds at most
    `chunk_size` rows and a resumed run batches every text exactly as an uninterrupted one."""
    folder = Path(folder)
    fingerprint = source.fingerprint()
    if resume and (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        check_folder(folder, manifest)  # a shard the manifest counts must be there, whole
        chunk_size = manifest["chunk_size"] if chunk_size is None else chunk_size
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
                    f"({', '.join(sorted(map(str, changed)))}); embed into a new folder, or start over with --force"
                )
        if source.path == "-":
            raise ResumeError("cannot resume from stdin: the rows already embedded cannot be skipped reliably")
    else:
        chunk_size = 4096 if chunk_size is None else chunk_size
        if force:
            clear_run(folder)
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

    pending, started = [], time.monotonic()

    def write_shard():
        nonlocal done, started
        vectors = np.concatenate(pending) if len(pending) > 1 else pending[0]
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
        pending.clear()
        started = time.monotonic()

    stats = {} if stats is None else stats
    stats.update(texts=0, tokens=0, truncated=0)
    engine = encoder.engine
    options = engine.options(**options)
    for piece in pieces(texts(), done, chunk_size):
        vectors, piece_stats = engine.encode(piece, options, show_progress=False)
        for key in ("tokens", "truncated"):
            stats[key] += piece_stats[key]
        stats["texts"] += len(piece)
        release_free_memory()  # otherwise the heap fragments and resident memory creeps piece by piece
        pending.append(vectors)
        held = sum(len(v) for v in pending)
        if (done + held) % chunk_size == 0 or time.monotonic() - started >= shard_seconds:  # a chunk's end
            write_shard()
        if progress is not None:
            progress(done + sum(len(v) for v in pending))
    if pending:
        write_shard()
    warn_truncated(stats["truncated"], stats["texts"], options.max_length)
    manifest["complete"] = True
    _write_json(folder / MANIFEST, manifest)
    return manifest


RUN_FILE = re.compile(r"shard-\d{5}(\.ids\.json|\.npy)|manifest\.json")


def clear_run(folder: Path) -> None:
    """Delete a recorded run from `folder` (its manifest, shards and ids files, and the temporary files of
    an interrupted write), refusing a folder that holds anything else: --force never deletes other files."""
    if not folder.is_dir():
        return
    files = list(folder.iterdir())
    # a run's files, and the temporary names minibert/formats/atomic.py writes them under (.NAME.XXXX.tmp)
    others = [f.name for f in files if not RUN_FILE.fullmatch(re.sub(r"^\.(.+)\.[^.]+\.tmp$", r"\1", f.name))]
    if others:
        raise FileExistsError(
            f"{folder} holds files that are not a minibert run's ({others[0]}, ...); "
            "--force deletes only a run's own files: choose a new folder"
        )
    for f in files:
        f.unlink()


class Vectors:
    """The shards of a vectors folder as one read-only (rows, dim) float32 array-like, memory-mapped: len,
    shape, numpy's indexing (ints, slices, index arrays, masks, and a second index for the columns), and
    np.asarray() for a copy in memory. Every shard is checked against the manifest when the folder opens."""

    def __init__(self, folder, verify: bool = False):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        manifest_path = self.folder / MANIFEST
        self._parts = []
        for entry in self.manifest["shards"]:
            path = check_shard(self.folder, entry, self.manifest["dim"], manifest_path)
            read_ids(self.folder, entry, manifest_path)
            if verify and _sha256(path) != entry["sha256"]:
                raise ValueError(f"{path}: sha256 differs from the manifest's: the shard is damaged")
            self._parts.append(np.load(path, mmap_mode="r", allow_pickle=False))
        self._ends = np.cumsum([len(p) for p in self._parts])
        self.shape = (int(self._ends[-1]) if len(self._ends) else 0, self.manifest["dim"])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def ids(self) -> list:
        out = []
        for entry in self.manifest["shards"]:
            out += read_ids(self.folder, entry, self.folder / MANIFEST)
        return out

    def texts(self, rows) -> dict | None:
        """{row: text} for `rows`, read from the input the run recorded, where that file is still there and
        unchanged (its size, time and first MiB as recorded); None otherwise."""
        recorded = self.manifest["input"]
        if recorded.get("path", "-") == "-" or not Path(recorded["path"]).is_file():
            return None
        source = Source(
            recorded["path"],
            recorded["format"],
            recorded.get("text_field") or "text",
            recorded.get("id_field"),
            "replace",
        )
        if source.fingerprint() != recorded:
            return None
        wanted, found = set(int(r) for r in rows), {}
        for row, (_, text) in enumerate(source.rows()):
            if row in wanted:
                found[row] = text
                if len(found) == len(wanted):
                    break
        return found

    def __getitem__(self, index):
        rows, columns = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        if isinstance(rows, (int, np.integer)) and not isinstance(rows, (bool, np.bool_)):
            i = int(rows) + (len(self) if rows < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {rows} is outside {len(self)} rows")
            part = int(np.searchsorted(self._ends, i, side="right"))
            return np.asarray(self._parts[part][i - (self._ends[part - 1] if part else 0)])[columns]
        chosen = np.arange(len(self))[rows]  # numpy's rules for slices, arrays, masks, True, None, ...
        flat = chosen.reshape(-1)
        part_of = np.searchsorted(self._ends, flat, side="right")
        out = np.empty((len(flat), self.shape[1]), np.float32)
        for part in np.unique(part_of):
            mine = part_of == part
            out[mine] = self._parts[part][flat[mine] - (self._ends[part - 1] if part else 0)]
        out = out.reshape(*chosen.shape, self.shape[1])
        return out[(slice(None),) * chosen.ndim + columns] if columns else out

    def __array__(self, dtype=None, copy=None):
        whole = np.concatenate(self._parts) if self._parts else np.empty((0, self.shape[1]), np.float32)
        return whole.astype(dtype) if dtype is not None else whole

    def __iter__(self):
        for part in self._parts:
            yield from part


def read_vectors(folder, verify: bool = False, partial: bool = False) -> Vectors:
    """The vectors of a folder written by `minibert embed -o DIR/`, in input order (memory-mapped).
    `verify=True` also checks every shard's sha256 against the manifest. A run that was interrupted holds
    only its first rows: that is a warning, unless `partial=True` says the caller knows."""
    vectors = Vectors(folder, verify=verify)
    if not vectors.manifest["complete"] and not partial:
        warnings.warn(
            f"{folder} holds an interrupted run: the first {len(vectors)} rows of its input, not all of them "
            "(run the same `minibert embed` with --resume to finish it; read_vectors(..., partial=True) "
            "reads a partial run without this warning)",
            stacklevel=2,
        )
    return vectors
