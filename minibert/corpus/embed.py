"""The work behind `minibert embed`, as Python functions: texts in, vectors out to one file (npy, jsonl,
tsv) or to a folder of shards (minibert/corpus/shards.py), with every path and format checked before
the model loads.

Where the vectors go (`output_target`): an existing folder, or a name ending in "/", is a folder of
shards; a name ending in .npy, .jsonl or .tsv is that file; an existing file that is not a regular one
(a FIFO, /dev/stdout) is written as it is, in --format (npy by default); any other name is that file only
with --format, and otherwise refused with what to write instead, so that `-o vectors` never quietly
becomes a file called "vectors", nor `-o v.csv` a .csv file holding npy bytes.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from minibert.corpus.shards import MANIFEST, NO_PYARROW, Source, embed_to_folder, run_record, write_vectors

FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".tsv": "tsv"}


def read_lines(source: str, errors: str = "strict") -> list[str]:
    """One text per line, from a file or stdin ("-"); a blank line is an (empty) text of its own.
    `errors="replace"` puts U+FFFD where bytes are not UTF-8."""
    name = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except IsADirectoryError:
        raise ValueError(f"cannot read {name}: it is a folder; give a file of texts") from None
    except OSError as e:
        raise ValueError(f"cannot read {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text (byte {e.start}); --errors replace puts U+FFFD there") from None
    # One text per "\n" ("\r\n" too); not str.splitlines(), which also breaks at \f, \v, \x1c-\x1e,
    # U+0085, U+2028 and U+2029, characters a text may hold.
    text = text.removeprefix("\ufeff")
    lines = text.removesuffix("\n").split("\n") if text else []
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise ValueError(f"{name} is empty: give one text per line")
    return lines


def read_texts(source: Source) -> list[str]:
    """Every text of `source`, in its format: plain text as read_lines reads it, JSONL and Parquet by their
    text field, so that an input means the same whatever the output."""
    if source.format == "text":
        return read_lines(source.path, source.errors)
    texts = [text for _, text in source.rows()]
    if not texts:
        raise ValueError(f"{source.name} is empty: it holds no rows")
    return texts


def check_input(source: Source) -> None:
    """An input that can be read in its format, checked before the model loads."""
    if source.format == "parquet" and source.path == "-":
        raise ValueError("Parquet input must be a file, not stdin")
    if source.format == "text" and (source.text_field != "text" or source.id_field):
        raise ValueError("--text-field and --id-field are for JSONL and Parquet input")
    if source.path != "-" and Path(source.path).is_dir():
        raise ValueError(f"cannot read {source.path}: it is a folder; give a file of texts")
    if source.path != "-" and not Path(source.path).is_file():
        raise ValueError(f"cannot read {source.path}: no such file")
    if source.format == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError(NO_PYARROW)


def output_target(output: str | None, given_format: str | None) -> tuple[str, Path | None, str | None]:
    """("folder", path, None) or ("file", path or None for stdout, format) for `-o OUTPUT` (see the module
    docstring); a name whose format cannot be written is refused, saying what to write instead."""
    if output is None:
        return "file", None, given_format or "npy"
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        if given_format is not None:
            raise ValueError(f"{output}: a folder output gets .npy shards and a manifest; --format is for one file")
        return "folder", path, None
    inferred = FORMATS.get(path.suffix.lower())
    if given_format and inferred and given_format != inferred:
        raise ValueError(f"--format {given_format} does not match the extension of {output}")
    if inferred:
        return "file", path, inferred
    special = path.exists() and not stat.S_ISREG(path.stat().st_mode)
    if special or given_format:  # a FIFO or a device, or a format said outright
        return "file", path, given_format or "npy"
    if path.suffix:
        raise ValueError(
            f"cannot write {path.suffix} files: -o takes a .npy, .jsonl or .tsv file, or DIR/ for a folder of shards"
        )
    raise ValueError(f"-o {output}: write {output}/ for a folder of shards, or {output}.npy (or --format) for one file")


def check_not_input(output: Path, source: Source) -> None:
    """Refuse an output that is the input itself (symlinks resolved): a run never writes over what it reads."""
    if source.path != "-" and output is not None and output.exists():
        if output.resolve() == Path(source.path).resolve():
            raise ValueError(f"-o {output} is the input file {source.path}; choose another output")


def embed_to_file(encoder, texts: list[str], out, fmt: str, **options):
    """Embed `texts` with encode's `options` and write them to the binary stream `out` in `fmt`."""
    vectors = encoder.encode(texts, **options)
    write_vectors(out, fmt, texts, vectors)
    return vectors


def check_folder_run(source: Source, output: Path, resume: bool, force: bool = False) -> None:
    """What a folder run needs, checked before the model loads: a readable input, and an output folder
    that is new, empty, holds a recorded run to --resume, or (--force) one to start over."""
    check_input(source)
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file, not a folder")
    if not output.parent.is_dir():
        raise ValueError(f"cannot write {output}: folder {output.parent} does not exist")
    recorded = (output / MANIFEST).is_file()
    if output.is_dir() and any(output.iterdir()) and not ((resume or force) and recorded):
        raise ValueError(f"{output} is not empty; choose a new folder, or --resume the run recorded there")


def embed_folder(
    encoder,
    source: Source,
    output,
    model_folder,
    *,
    chunk_size=None,
    resume=False,
    force=False,
    progress=None,
    quantize=None,
    **options,
) -> tuple[dict, dict]:
    """Embed `source` into the folder `output` as shards with a manifest (minibert/corpus/shards.py),
    recording the model folder and encode's `options`; returns (manifest, stats: texts, tokens, truncated)."""
    settings, model = run_record(encoder, model_folder, quantize=quantize, **options)
    stats = {}
    manifest = embed_to_folder(
        encoder,
        source,
        output,
        settings=settings,
        model=model,
        chunk_size=chunk_size,
        resume=resume,
        force=force,
        stats=stats,
        progress=progress,
    )
    return manifest, stats
