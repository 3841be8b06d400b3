"""The work behind `minibert embed`, as Python functions: texts in, vectors out to one file (npy, jsonl,
tsv) or to a folder of shards (minibert/corpus/shards.py), with every path and format checked before
the model loads."""

from __future__ import annotations

import sys
from pathlib import Path

from minibert.corpus.shards import MANIFEST, Source, embed_to_folder, run_record, write_vectors

FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".tsv": "tsv"}


def read_lines(source: str) -> list[str]:
    """One text per line, from a file or stdin ("-"); a blank line is an (empty) text of its own."""
    name = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text (byte {e.start})") from None
    # One text per "\n" ("\r\n" too); not str.splitlines(), which also breaks at \f, \v, \x1c-\x1e,
    # U+0085, U+2028 and U+2029, characters a text may hold.
    text = text.removeprefix("\ufeff")
    lines = text.removesuffix("\n").split("\n") if text else []
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise ValueError(f"{name} is empty: give one text per line")
    return lines


def output_format(given: str | None, output: Path | None) -> str:
    """--format, or the output file's extension, else npy; a clash between the two is refused."""
    inferred = FORMATS.get(output.suffix.lower()) if output is not None else None
    if given and inferred and given != inferred:
        raise ValueError(f"--format {given} does not match the extension of {output}")
    return given or inferred or "npy"


def embed_to_file(encoder, texts: list[str], out, fmt: str, **options):
    """Embed `texts` with encode's `options` and write them to the binary stream `out` in `fmt`."""
    vectors = encoder.encode(texts, **options)
    write_vectors(out, fmt, texts, vectors)
    return vectors


def check_folder_run(source: Source, output: Path, resume: bool) -> None:
    """What a folder run needs, checked before the model loads: an input that can be read in its format,
    and an output folder that is new, empty, or (with `resume`) holds a recorded run."""
    if source.format == "parquet" and source.path == "-":
        raise ValueError("Parquet input must be a file, not stdin")
    if source.format == "text" and (source.text_field != "text" or source.id_field):
        raise ValueError("--text-field and --id-field are for JSONL and Parquet input")
    if source.path != "-" and not Path(source.path).is_file():
        raise ValueError(f"cannot read {source.path}: no such file")
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output} is a file, not a folder")
    if not output.parent.is_dir():
        raise ValueError(f"cannot write {output}: folder {output.parent} does not exist")
    if source.format == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ImportError("Parquet input needs pyarrow: pip install 'minibert-encoder[parquet]'")
    if output.is_dir() and any(output.iterdir()) and not (resume and (output / MANIFEST).is_file()):
        raise ValueError(f"{output} is not empty; choose a new folder, or --resume the run recorded there")


def embed_folder(
    encoder,
    source: Source,
    output,
    model_folder,
    *,
    chunk_size=4096,
    resume=False,
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
        stats=stats,
        progress=progress,
    )
    return manifest, stats
