"""What each `minibert` command does with its parsed arguments (minibert/cli.py parses them): check what
argparse cannot, call the Python API that owns the work, and print the result; a summary goes to stderr."""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path

from minibert.engine.pooling import DENSE_POOLINGS
from minibert.formats.atomic import check_file_target
from minibert.settings import NUMPY_MAX_TEXTS
from minibert.tools.terminal import display_width, format_matrix, pad, printable


class UsageError(Exception):
    """A bad argument or input: one line on stderr, exit code 2. `prog` names the command when argparse
    found the fault, before there is a parsed command to name."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


def run_embed(args) -> None:
    from minibert.corpus import embed
    from minibert.corpus.shards import Source, input_format
    from minibert.formats.atomic import atomic_open

    start = time.perf_counter()
    if args.pooling is not None and args.pooling not in DENSE_POOLINGS:
        raise UsageError(f"unknown pooling {args.pooling!r}; choose from {', '.join(DENSE_POOLINGS)}")
    for name in ("batch_size", "max_length", "chunk_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.sparse:
        return run_embed_sparse(args, start)
    if args.top_k is not None:
        raise UsageError("--top-k is for --sparse vectors")
    kind, output, fmt = embed.output_target(args.output, args.format)
    source = Source(
        args.input, input_format(args.input, args.input_format), args.text_field or "text", args.id_field, args.errors
    )
    options = {
        "pooling": args.pooling,
        "normalize": False if args.no_normalize else None,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
    }
    if kind == "folder":
        return run_embed_folder(args, source, output, options, start)
    if args.resume or args.force:
        raise UsageError(f"--{'resume' if args.resume else 'force'} is for a folder of shards: give -o DIR/")
    if fmt == "npy" and output is None and sys.stdout.isatty():
        raise UsageError("npy output needs -o FILE (or --format jsonl/tsv for the terminal)")
    embed.check_input(source)
    if output is not None:
        check_file_target(output)
        embed.check_not_input(output, source)
    check_device(args.device)
    texts = embed.read_texts(source)
    encoder = load_encoder(args.model, args.device, args.quantize, args.lowercase, args.dtype)
    # The output is opened before the work, so an unwritable place fails now, and written to a temporary
    # name that becomes `output` only once every byte is on disk (minibert/formats/atomic.py).
    with atomic_open(output) if output is not None else _stdout() as out:
        vectors = embed.embed_to_file(encoder, texts, out, fmt, **options)
    seconds, where = time.perf_counter() - start, output or "stdout"
    print(
        f"minibert: embedded {len(texts)} texts ({vectors.shape[1]} dimensions, {fmt}) in {seconds:.1f} s -> {where}",
        file=sys.stderr,
    )


def run_embed_sparse(args, start: float) -> None:
    """embed --sparse: SPLADE vectors, one JSON line per text: {"indices": [...], "values": [...]}."""
    from minibert.corpus import embed
    from minibert.corpus.shards import Source, input_format
    from minibert.formats.atomic import atomic_open

    if args.model is None:
        raise UsageError("--sparse needs --model: a SPLADE (masked-LM) checkpoint")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    kind, output, fmt = embed.output_target(args.output, args.format or "jsonl")
    if kind == "folder" or fmt != "jsonl":
        raise UsageError("--sparse writes JSON lines: give -o FILE.jsonl, or none for stdout")
    for flag in ("pooling", "quantize", "dtype", "resume", "force", "chunk_size", "id_field"):
        if getattr(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} is not for --sparse vectors")
    source = Source(
        args.input, input_format(args.input, args.input_format), args.text_field or "text", None, args.errors
    )
    embed.check_input(source)
    texts = embed.read_texts(source)
    from minibert.sparse import SparseEncoder

    encoder = SparseEncoder.from_pretrained(args.model, device=args.device, max_length=args.max_length)
    rows = encoder.encode(texts, top_k=args.top_k, batch_size=args.batch_size)
    lines = "".join(
        json.dumps({"indices": indices.tolist(), "values": [round(float(v), 6) for v in values]}) + "\n"
        for indices, values in rows
    )
    with atomic_open(output) if output is not None else _stdout() as out:
        out.write(lines.encode())
    seconds = time.perf_counter() - start
    print(
        f"minibert: embedded {len(texts)} texts as sparse vectors in {seconds:.1f} s -> {output or 'stdout'}",
        file=sys.stderr,
    )


def run_rerank(args) -> None:
    from minibert.classify import CrossEncoder
    from minibert.corpus import embed

    documents = list(args.documents) + (embed.read_lines(args.documents_file) if args.documents_file else [])
    if not documents:
        raise UsageError("give documents after the query, or --documents FILE")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    ranked = CrossEncoder.from_pretrained(args.model).rank(args.query, documents, top_k=args.top_k)
    if args.json:
        print(json.dumps([{**r, "text": documents[r["corpus_id"]]} for r in ranked], ensure_ascii=False))
        return
    print_ranked([(r["score"], str(r["corpus_id"]), documents[r["corpus_id"]]) for r in ranked], "document")


def run_search(args) -> None:
    from minibert.corpus.shards import read_vectors, weights_sha256
    from minibert.encoder import Encoder
    from minibert.search import semantic_search

    if args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    vectors = read_vectors(args.vectors)
    recorded = vectors.manifest["model"]
    folder = Path(args.model) if args.model else Path(recorded["folder"])
    if not folder.is_dir():
        raise UsageError(f"the vectors were made by {recorded['folder']}, which is not there: give --model")
    if weights_sha256(folder) != recorded["weights_sha256"]:
        raise UsageError(f"{folder} is not the model these vectors were made with ({recorded['folder']})")
    settings = vectors.manifest["settings"]
    encoder = Encoder.from_pretrained(folder, dtype=settings["dtype"], quantize=settings["quantize"])
    queries = encoder.encode(
        args.queries, pooling=settings["pooling"], normalize=settings["normalize"], max_length=settings["max_length"]
    )
    results = semantic_search(queries, vectors, top_k=args.top_k)
    ids = vectors.ids()
    texts = vectors.texts([h["corpus_id"] for hits in results for h in hits]) or {}
    if args.json:
        out = [
            [
                {
                    "row": h["corpus_id"],
                    "id": ids[h["corpus_id"]],
                    "score": h["score"],
                    "text": texts.get(h["corpus_id"]),
                }
                for h in hits
            ]
            for hits in results
        ]
        print(json.dumps(out if len(out) > 1 else out[0], ensure_ascii=False))
        return
    for query, hits in zip(args.queries, results):
        if len(args.queries) > 1:
            print(f"# {printable(query)}")
        rows = [(h["score"], str(ids[h["corpus_id"]]), texts.get(h["corpus_id"], "")) for h in hits]
        print_ranked(rows, "text" if texts else "")
    if not texts:
        print(
            "minibert search: the input file the vectors were made from is gone or changed; ids only", file=sys.stderr
        )


def run_classify(args) -> None:
    from minibert.classify import Classifier

    top_k = None if args.top_k == 0 else args.top_k
    if args.top_k < 0:
        raise UsageError(f"--top-k must be positive, or 0 for every label; got {args.top_k}")
    predictions = Classifier.from_pretrained(args.model).predict(list(args.texts), top_k=top_k)
    if args.json:
        print(json.dumps(predictions, ensure_ascii=False))
        return
    for text, labels in zip(args.texts, predictions):
        shown = ", ".join(f"{printable(p['label'])} {p['score']:.4f}" for p in labels)
        print(f"{shown}\t{printable(text)}")


def print_ranked(rows, heading: str) -> None:
    """A ranked table: rank, score, id, and the text (one line, escaped, cut to 100 characters)."""
    width = max([len(i) for _, i, _ in rows] + [2])
    print(f"{'#':>3}  {'score':>9}  {'id':>{width}}  {heading}".rstrip())
    for rank, (score, id_, text) in enumerate(rows, 1):
        line = printable(" ".join(text.split()))
        print(f"{rank:>3}  {score:9.4f}  {id_:>{width}}  {line[:100]}".rstrip())


def run_embed_folder(args, source, output: Path, options: dict, start: float) -> None:
    """embed into a folder of shards, resumable (minibert/corpus/shards.py)."""
    from minibert.corpus import embed
    from minibert.corpus.shards import count_rows, read_manifest
    from minibert.formats.hub import default_model, resolve

    embed.check_folder_run(source, output, args.resume, args.force)
    check_device(args.device)
    folder = resolve(args.model) if args.model else default_model()
    encoder = load_encoder(folder, args.device, args.quantize, args.lowercase, args.dtype)
    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=count_rows(source), unit="text", desc="Embedding", file=sys.stderr, dynamic_ncols=True)
    interrupted = []

    def on_interrupt(signum, frame):  # Python's own handler can land in a finaliser, which swallows it
        interrupted.append(signum)
        raise KeyboardInterrupt

    def progress(done):
        if interrupted:  # an interrupt that was swallowed still stops the run, between two chunks
            raise KeyboardInterrupt
        if bar is not None:
            bar.update(done - bar.n)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        manifest, stats = embed.embed_folder(
            encoder,
            source,
            output,
            folder,
            chunk_size=args.chunk_size,
            resume=args.resume,
            force=args.force,
            progress=progress,
            quantize=args.quantize,
            **options,
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        kept = read_manifest(output) if (output / "manifest.json").is_file() else {"rows": 0, "shards": []}
        print(
            f"minibert embed: interrupted; {output} keeps {rows(kept['rows'])} in {shards(kept)}: run the same "
            "command with --resume to continue",
            file=sys.stderr,
        )
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if bar is not None:
        bar.close()
    seconds, texts = time.perf_counter() - start, stats.get("texts", 0)
    if texts == 0 and args.resume:
        print(
            f"minibert: {output} was already complete: {rows(manifest['rows'])} in {shards(manifest)}", file=sys.stderr
        )
        return
    print(
        f"minibert: embedded {texts} texts ({stats.get('tokens', 0)} tokens, {stats.get('truncated', 0)} truncated) "
        f"in {seconds:.1f} s, {texts / seconds:.1f} texts/s -> {output} ({rows(manifest['rows'])} in "
        f"{shards(manifest)})",
        file=sys.stderr,
    )


def rows(n: int) -> str:
    return f"{n} row{'' if n == 1 else 's'}"


def shards(manifest: dict) -> str:
    n = len(manifest["shards"])
    return f"{n} shard{'' if n == 1 else 's'}"


def check_model_files(output: Path, model) -> None:
    """An output file may not replace a file of the model folder it is computed from."""
    from minibert.formats.atomic import check_not_source
    from minibert.formats.hub import default_model

    folder = Path(model) if model else default_model()
    if folder.is_dir():
        check_not_source(output, folder, "a file of the model folder")


def check_device(device) -> None:
    if device is None:
        return
    from minibert.settings import as_device

    try:
        as_device(device)
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None


class _stdout:
    """sys.stdout's bytes, as a context manager that flushes (a closed pipe surfaces here) and stays open."""

    def __enter__(self):
        return sys.stdout.buffer

    def __exit__(self, *exc):
        sys.stdout.buffer.flush()
        return False


def run_similarity(args) -> None:
    from minibert.formats.hub import default_model, resolve
    from minibert.numpy_encoder import NumpyEncoder, numpy_can_load

    folder = default_model() if args.model is None else resolve(args.model)
    if args.backend == "auto":  # a few texts: numpy, so that the command never waits for torch to import
        args.backend = "numpy" if len(args.texts) <= NUMPY_MAX_TEXTS and numpy_can_load(folder) else "torch"
    if args.backend == "numpy":
        encoder = NumpyEncoder.from_pretrained(folder, lowercase=args.lowercase)
    else:
        encoder = load_encoder(folder, lowercase=args.lowercase)
    vectors = encoder.encode(args.texts, normalize=True)
    print(format_matrix(args.texts, vectors @ vectors.T))


def run_tokenize(args) -> None:
    from minibert.formats.hub import default_model
    from minibert.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.model or default_model(), lowercase=args.lowercase)
    # the tokenizer's encodings, not its tensors: this command never imports torch
    encoding = tokenizer.encode([args.text], None if args.pair is None else [args.pair], truncation=False)[0]
    ids, types = encoding.ids, encoding.type_ids
    tokens = [printable(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    width = max(display_width(t) for t in tokens + ["token"])
    print(f"{'#':>4}  {pad('token', width)}  {'id':>6}  type")
    for i, (token, id_, type_) in enumerate(zip(tokens, ids, types)):
        print(f"{i:>4}  {pad(token, width)}  {id_:>6}  {type_:>4}")


def run_inspect(args) -> None:
    from minibert.tools.trace import format_report, one_text, report

    folder, model, batch, tokens = one_text(args.model, args.text, args.pair, args.lowercase)
    result = report(model, batch, tokens, folder)
    print(json.dumps(result, ensure_ascii=False, indent=1) if args.json else format_report(result))


def run_attention(args) -> None:
    from minibert.formats.atomic import write_text
    from minibert.tools.explorer import attention_html, attention_maps, write_png_heatmaps
    from minibert.tools.trace import one_text

    # the page goes to -o, or to attention.html unless only --png was asked for
    output = Path(args.output or "attention.html") if args.output or not args.png else None
    if output is not None:
        check_file_target(output)
        check_model_files(output, args.model)
    if args.png:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--png needs matplotlib: pip install 'minibert-encoder[viz]' (from a clone: '.[viz]')")
    folder, model, batch, tokens = one_text(args.model, args.text, args.pair, args.lowercase)
    attentions = attention_maps(model, batch)
    segments = batch["token_type_ids"][0].tolist()
    title = args.text if args.pair is None else f"{args.text} | {args.pair}"
    if output is not None:
        write_text(output, attention_html(tokens, attentions, title, segments))
        size = f"{len(tokens)} tokens, {len(attentions)} layers x {attentions[0].shape[0]} heads"
        print(f"minibert: wrote {output} ({size})", file=sys.stderr)
    if args.png:
        written = write_png_heatmaps(tokens, attentions, args.png, title=Path(str(folder)).name)
        print(f"minibert: wrote {len(written)} heatmaps to {args.png}", file=sys.stderr)


def run_dump(args) -> None:
    from minibert.corpus import embed
    from minibert.tools.dump import dump_texts, write_dump

    output = Path(args.output)
    check_file_target(output)
    check_model_files(output, args.model)
    texts = list(args.texts) + (embed.read_lines(args.texts_file) if args.texts_file else [])
    if not texts:
        raise UsageError("give texts, or --texts FILE")
    if args.pair is not None and len(args.pair) != len(texts):
        raise UsageError(f"{len(texts)} texts but {len(args.pair)} --pair texts")
    heads = tuple(dict.fromkeys(args.head or ()))
    tensors, metadata = dump_texts(
        args.model, texts, args.pair, dtype=args.dtype, heads=heads, lowercase=args.lowercase
    )
    write_dump(output, tensors, metadata)
    size = output.stat().st_size / 1e6
    print(f"minibert: wrote {output}: {len(tensors)} tensors for {len(texts)} texts, {size:.1f} MB", file=sys.stderr)


def run_compare(args) -> None:
    from minibert.tools.compare import compare, format_report
    from minibert.tools.dump import read_dump

    reference, _ = read_dump(args.reference)
    candidate, _ = read_dump(args.candidate)
    report = compare(reference, candidate, atol=args.atol, rtol=args.rtol, subset=args.subset)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    if not report.ok:
        raise SystemExit(1)


def run_parity(args) -> None:
    from minibert.corpus import embed
    from minibert.formats.hub import default_model
    from minibert.tools.parity import format_parity, parity

    check_device(args.device)
    texts = embed.read_lines(args.texts_file) if args.texts_file else None
    try:
        report = parity(
            args.model or default_model(), device=args.device or "cpu", dtype=args.dtype, texts=texts, atol=args.atol
        )
    except ImportError as e:
        raise UsageError(f"{e}") from None
    print(json.dumps(report, indent=1) if args.json else format_parity(report))
    if not report["ok"]:
        raise SystemExit(1)


def run_quantize(args) -> None:
    from minibert.encoder import Encoder
    from minibert.formats.atomic import check_folder_target, check_not_source
    from minibert.formats.hub import default_model, resolve

    check_folder_target(Path(args.out), args.force)
    folder = resolve(args.model) if args.model else default_model()
    check_not_source(args.out, folder, "the model folder", folder=True)
    start = time.perf_counter()
    encoder = Encoder.from_pretrained(folder, quantize="int8", lowercase=args.lowercase)
    encoder.save_pretrained(args.out, force=args.force)
    print(f"minibert: wrote {args.out}, int8, in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def run_fill_mask(args) -> None:
    from minibert.heads import fill_mask, masked_lm
    from minibert.tokenizer import Tokenizer

    if args.top_k < 1:
        raise UsageError(f"--top-k must be positive, got {args.top_k}")
    folder = args.model
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=args.lowercase)
    mask = tokenizer.mask_token  # the model's own: [MASK] for BERT, <mask> for RoBERTa's kind
    if mask is None:
        raise UsageError(f"{folder}: its tokenizer has no mask token")
    masks = tokenizer.tokenize(args.text).count(mask)
    if masks != 1:
        raise UsageError(f"the text must hold exactly one {mask}, it holds {masks}")
    model = masked_lm(folder)
    candidates = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    tokens = [printable(c["token"]) for c in candidates]
    width = max(display_width(t) for t in tokens)
    for token, c in zip(tokens, candidates):
        print(f"{pad(token, width)}  {c['score']:.4f}")


def run_convert(args) -> None:
    from minibert.formats.convert import convert

    out = convert(args.src, args.out, lowercase=args.lowercase, force=args.force)
    print(f"minibert: wrote {out}", file=sys.stderr)


def run_serve(args) -> None:
    import dataclasses
    import importlib.util
    import ipaddress
    import os

    for module in ("starlette", "h11", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"needs {module}, part of the serve extra: pip install 'minibert-encoder[serve]' "
                "(from a clone: '.[serve]')"
            )
    from minibert.serve.limits import Limits
    from minibert.serve.run import serve

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, got {args.port}")
    names = [field.name for field in dataclasses.fields(Limits)]
    try:
        limits = Limits(**{name: getattr(args, name) for name in names})
    except ValueError as e:
        name = str(e).split()[0]
        raise UsageError(f"--{name.replace('_', '-')}{str(e)[len(name) :]}") from None
    api_key = args.api_key if args.api_key is not None else os.environ.get("MINIBERT_API_KEY")
    if api_key is not None:
        where = "--api-key" if args.api_key is not None else "MINIBERT_API_KEY"
        if not api_key:
            raise UsageError(
                f"{where} is empty, which would let every client in; leave it unset to serve without a key"
            )
        if not api_key.isascii() or not api_key.isprintable() or " " in api_key:
            raise UsageError(
                f"{where} must be printable ASCII without spaces: a client sends it in an HTTP header, "
                "where other characters never arrive as typed"
            )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and api_key is None:
        print(
            f"minibert serve: warning: listening on {args.host} without an API key: anyone who can reach this "
            "machine can use the server (--api-key KEY or MINIBERT_API_KEY)",
            file=sys.stderr,
        )
    check_device(args.device)
    models = served_models(args)

    # oneDNN keeps a compiled kernel per product shape it meets (1024 by default); a server meets a new batch
    # shape with nearly every forward, so the cache holds little but memory. A process of its own, so it is ours
    # to set, unless the user has.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    code = serve(
        models,
        host=args.host,
        port=args.port,
        limits=limits,
        api_key=api_key,
        cors_origins=args.cors_origin,
        access_log=not args.no_access_log,
    )
    if code:
        raise SystemExit(code)


def served_models(args) -> list:
    """`minibert serve`'s models: each --model with its name (--served-model-name, in order, else the folder's)
    and its task, read from its folder; checked here, before anything loads."""
    from minibert.formats.hub import default_model, resolve
    from minibert.serve.models import Model, task_of

    given = args.model or [None]
    names, tasks = args.served_model_name or [], args.task or []
    for flag, values in (("--served-model-name", names), ("--task", tasks)):
        if values and len(values) != len(given):
            raise UsageError(f"{len(values)} {flag} for {len(given)} --model: give one per model, in the same order")
    models = []
    for i, spec in enumerate(given):
        folder = resolve(spec) if spec else default_model()
        name = names[i] if names else (Path(str(spec)).name if spec else "all-MiniLM-L6-v2")
        if name in [m.name for m in models]:
            raise UsageError(f"two models are named {name!r}; tell them apart with --served-model-name")
        task = tasks[i] if tasks else task_of(folder)
        models.append(Model(name, task, functools.partial(load_served, task, folder, args)))
    return models


def load_served(task: str, folder, args):
    """The loaded model of one served task (called in its model thread)."""
    options = dict(device=args.device, dtype=args.dtype, max_length=args.max_length, quantize=args.quantize)
    if task == "embed":
        from minibert.encoder import Encoder

        return Encoder.from_pretrained(folder, lowercase=args.lowercase, **options)
    if task == "sparse":
        from minibert.sparse import SparseEncoder

        return SparseEncoder.from_pretrained(folder, **options)
    from minibert.classify import Classifier, CrossEncoder

    return (CrossEncoder if task == "rerank" else Classifier).from_pretrained(folder, **options)


def load_encoder(model, device=None, quantize=None, lowercase=None, dtype=None):
    from minibert.encoder import Encoder

    if quantize and dtype not in (None, "float32"):
        raise UsageError(f"--quantize int8 computes in float32 around its int8 products; drop --dtype {dtype}")
    if quantize:  # seconds of work before the first text: say so, and how to skip it next time
        print(
            "minibert: calibrating int8 on texts from the vocabulary (a few seconds; `minibert quantize` "
            "saves a calibrated model that loads without this)",
            file=sys.stderr,
            flush=True,
        )
    return Encoder.from_pretrained(model, device=device, quantize=quantize, lowercase=lowercase, dtype=dtype)
