"""The `minibert` command line: embed, similarity, tokenize, inspect, attention, fill-mask, convert."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
from pathlib import Path

import minibert
from minibert.settings import POOLINGS

NUMPY_MAX_TEXTS = 16  # similarity --backend auto: the numpy backend up to this many texts


class UsageError(Exception):
    """A bad argument or input: one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


EMBED_EXAMPLES = """examples:
  minibert embed sentences.txt -o vectors.npy
  minibert embed corpus.jsonl --text-field body --id-field doc_id -o vectors/     # shards + manifest.json
  minibert embed corpus.jsonl --text-field body --id-field doc_id -o vectors/ --resume   # after a crash
  cat sentences.txt | minibert embed --format jsonl > vectors.jsonl
  minibert embed --model path/to/bert --pooling cls --no-normalize --format tsv sentences.txt
"""
SIMILARITY_EXAMPLES = """examples:
  minibert similarity "A man is eating food." "A man eats a meal." "The sky is blue."
  minibert similarity 春眠不觉晓 大梦谁先觉 浓睡不消残酒 东临碣石以观沧海
"""
FILL_MASK_EXAMPLES = """examples:
  minibert fill-mask --model bert-base-uncased "Paris is the [MASK] of France."
  minibert fill-mask --model chinese_L-12_H-768_A-12 --top-k 10 "春眠不觉[MASK]"

The model needs its masked-language-model head (cls.predictions.*), as BertForPreTraining and
BertForMaskedLM checkpoints and Google's releases have; sentence-embedding models such as the default
all-MiniLM-L6-v2 do not.
"""
INSPECT_EXAMPLES = """examples:
  minibert inspect "The cat sat on the mat."
  minibert inspect --model bert-base-uncased "How old are you?" "I am six." --json > trace.json

Step names are those of minibert/tools/trace.py (and minibert dump): embeddings.*, layers.N.attention.*,
layers.N.ffn.*, pooler.*.
"""
ATTENTION_EXAMPLES = """examples:
  minibert attention "The animal didn't cross the street because it was too tired." -o attention.html
  minibert attention "How old are you?" "I am six." --png heatmaps/
"""
DUMP_EXAMPLES = """examples:
  minibert dump "The cat sat on the mat." "A dog barked." -o golden.safetensors
  minibert dump --model uncased_L-12_H-768_A-12 --texts sentences.txt --head mlm -o golden.safetensors

Tensor names, and where each is taken: docs/activations.md. Padded positions hold 0.
"""
COMPARE_EXAMPLES = """examples:
  minibert compare golden.safetensors my_port.safetensors
  minibert compare golden.safetensors my_port_npy/ --atol 1e-4 --json
"""
PARITY_EXAMPLES = """examples:
  minibert parity --model bert-base-uncased
  minibert parity --model uncased_L-12_H-768_A-12 --dtype bfloat16 --json

Needs transformers (pip install transformers), the reference it compares against. Exits 1 when an
output is beyond tolerance.
"""
TOKENIZE_EXAMPLES = """examples:
  minibert tokenize "Unaffable, isn't it?"
  minibert tokenize "How old are you?" "I am six."
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="minibert",
        description="A readable BERT encoder: sentence embeddings, similarity and tokenization. "
        "The default model is all-MiniLM-L6-v2.",
    )
    parser.add_argument("--version", action="version", version=f"minibert {minibert.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name, help, examples, default_model=True):
        sub = commands.add_parser(
            name, help=help, description=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        if default_model:
            sub.add_argument(
                "--model", metavar="M", help="model folder or Hugging Face Hub id (default: all-MiniLM-L6-v2)"
            )
        else:
            sub.add_argument("--model", metavar="M", required=True, help="model folder or Hugging Face Hub id")
        add_case_options(sub)
        return sub

    embed = add("embed", "embed one text per line into vectors", EMBED_EXAMPLES)
    embed.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="input text file (default: stdin)")
    embed.add_argument("--pooling", metavar="P", help=f"one of {', '.join(POOLINGS)} (default: the model's)")
    embed.add_argument("--no-normalize", action="store_true", help="do not scale vectors to unit length")
    embed.add_argument("--batch-size", type=int, default=32, metavar="N", help="texts per batch (default: 32)")
    embed.add_argument("--max-length", type=int, metavar="N", help="truncate texts to N tokens (default: the model's)")
    embed.add_argument(
        "--format",
        choices=("npy", "jsonl", "tsv"),
        help="npy, jsonl or tsv (default: from the -o extension, else npy); jsonl and tsv go to stdout unless -o",
    )
    embed.add_argument("-o", "--output", metavar="OUT", help="output file, written whole or not at all")
    embed.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    embed.add_argument(
        "--input-format",
        choices=("text", "jsonl", "parquet"),
        help="text (one per line), jsonl or parquet (default: from the file's extension)",
    )
    embed.add_argument("--text-field", metavar="NAME", help="JSONL/Parquet: the field holding the text (default: text)")
    embed.add_argument(
        "--id-field", metavar="NAME", help="JSONL/Parquet: a field to record as each row's id (default: the row number)"
    )
    embed.add_argument(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="a line that is not UTF-8: stop with its line number (strict, default) or replace "
        "the bad bytes with U+FFFD",
    )
    embed.add_argument(
        "--chunk-size", type=int, default=4096, metavar="N", help="rows per shard with -o DIR/ (default: 4096)"
    )
    embed.add_argument("--resume", action="store_true", help="continue a folder output after its last finished shard")
    embed.add_argument(
        "--quantize", choices=("int8",), help="int8: faster on CPU, vectors within about 0.99 cosine of float32"
    )
    embed.set_defaults(run=run_embed)

    similarity = add("similarity", "print the cosine similarity matrix of a few texts", SIMILARITY_EXAMPLES)
    similarity.add_argument("texts", nargs="+", metavar="TEXT")
    similarity.add_argument(
        "--backend",
        choices=("auto", "torch", "numpy"),
        default="auto",
        help=f"numpy computes without loading torch, which is most of a short run's time; "
        f"auto (default) picks it for up to {NUMPY_MAX_TEXTS} texts of a model "
        "folder with float weights in model.safetensors, torch otherwise",
    )
    similarity.set_defaults(run=run_similarity)

    convert = commands.add_parser(
        "convert",
        help="write a checkpoint (e.g. Google's TensorFlow release) as a Hugging Face folder",
        description="Write a checkpoint folder that minibert reads (a Google TensorFlow release such as "
        "uncased_L-12_H-768_A-12, a .bin or safetensors folder) as a Hugging Face folder: "
        "config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json.",
        epilog="examples:\n  minibert convert chinese_L-12_H-768_A-12 bert-base-chinese\n"
        "  minibert convert --cased my_tf_bert out/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("src", metavar="SRC_DIR")
    convert.add_argument("out", metavar="OUT_DIR")
    convert.add_argument("--force", action="store_true", help="replace OUT_DIR if it is not empty")
    add_case_options(convert)
    convert.set_defaults(run=run_convert)

    fill = add(
        "fill-mask", "the most likely wordpieces for the [MASK] in a text", FILL_MASK_EXAMPLES, default_model=False
    )
    fill.add_argument("text", metavar="TEXT", help="a text with one [MASK]")
    fill.add_argument("--top-k", type=int, default=5, metavar="K", help="how many candidates (default: 5)")
    fill.set_defaults(run=run_fill_mask)

    inspect = add(
        "inspect", "trace one forward pass: every step's shape and statistics, attention, vectors", INSPECT_EXAMPLES
    )
    inspect.add_argument("text", metavar="TEXT")
    inspect.add_argument("pair", nargs="?", metavar="TEXT", help="a second text, segment B")
    inspect.add_argument("--json", action="store_true", help="print everything as one JSON object")
    inspect.set_defaults(run=run_inspect)

    attention = add("attention", "write an attention explorer page (and PNG heatmaps) for a text", ATTENTION_EXAMPLES)
    attention.add_argument("text", metavar="TEXT")
    attention.add_argument("pair", nargs="?", metavar="TEXT", help="a second text, segment B")
    attention.add_argument(
        "-o", "--output", metavar="HTML", default="attention.html", help="the page to write (default: attention.html)"
    )
    attention.add_argument(
        "--png",
        metavar="DIR",
        help="also write one heatmap per layer into DIR (needs matplotlib: pip install 'minibert-encoder[viz]')",
    )
    attention.set_defaults(run=run_attention)

    dump = add(
        "dump", "write golden activations: every step of the forward pass, in one safetensors file", DUMP_EXAMPLES
    )
    dump.add_argument("texts", nargs="*", metavar="TEXT", help="texts (or --texts FILE)")
    dump.add_argument("--texts", dest="texts_file", metavar="FILE", help="one text per line")
    dump.add_argument(
        "--pair", action="append", metavar="TEXT", help="a second text (segment B) for each text, in order; repeat it"
    )
    dump.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16", "float64"))
    dump.add_argument("--head", action="append", choices=("mlm", "nsp"), help="also dump these head logits")
    dump.add_argument("-o", "--output", metavar="FILE", required=True, help="the .safetensors file to write")
    dump.set_defaults(run=run_dump)

    compare = commands.add_parser(
        "compare",
        help="compare two activation dumps and name the first tensor that goes wrong",
        description="Compare CANDIDATE with REFERENCE (both written by minibert dump; the candidate may "
        "instead be a folder of <step>.npy files) at real positions; exits 1 if any tensor "
        "is beyond tolerance or missing.",
        epilog=COMPARE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("reference", metavar="REFERENCE")
    compare.add_argument("candidate", metavar="CANDIDATE")
    compare.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    compare.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    compare.set_defaults(run=run_compare)

    parity = add(
        "parity", "compare minibert with Hugging Face transformers on a checkpoint, output by output", PARITY_EXAMPLES
    )
    parity.add_argument("--device", help="cpu (default) or cuda")
    parity.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parity.add_argument(
        "--texts",
        dest="texts_file",
        metavar="FILE",
        help="one text per line (default: a few built-in sentences and a pair)",
    )
    parity.add_argument("--atol", type=float, help="tolerance (default 1e-5 in float32, 1e-3 in half precision)")
    parity.add_argument("--json", action="store_true", help="print the report as JSON")
    parity.set_defaults(run=run_parity)

    quantize = commands.add_parser(
        "quantize",
        help="calibrate an int8 model once and save it: it then loads in a second",
        description="Quantize MODEL's encoder layers to int8 (calibrated now, as Encoder.from_pretrained("
        "quantize='int8') does at every load) and write the result to OUT: int8 weights with their "
        "scales and smoothing factors, the tokenizer and the sentence-transformers metadata.",
        epilog="examples:\n  minibert quantize all-MiniLM-L6-v2-folder minilm-int8\n"
        "  minibert embed --model minilm-int8 sentences.txt -o vectors.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    quantize.add_argument(
        "model", metavar="MODEL", nargs="?", help="model folder or Hub id (default: all-MiniLM-L6-v2)"
    )
    quantize.add_argument("out", metavar="OUT")
    quantize.add_argument("--force", action="store_true", help="replace OUT if it is not empty")
    add_case_options(quantize)
    quantize.set_defaults(run=run_quantize)

    tokenize = add("tokenize", "show the wordpieces, ids and token types of a text (or pair)", TOKENIZE_EXAMPLES)
    tokenize.add_argument("text", metavar="TEXT")
    tokenize.add_argument("pair", nargs="?", metavar="TEXT", help="a second text, segment B")
    tokenize.set_defaults(run=run_tokenize)
    return parser


def add_case_options(parser) -> None:
    case = parser.add_mutually_exclusive_group()
    case.add_argument(
        "--uncased",
        dest="lowercase",
        action="store_const",
        const=True,
        help="lower-case text before tokenizing (for a vocab.txt folder whose name does not say)",
    )
    case.add_argument("--cased", dest="lowercase", action="store_const", const=False, help="keep case")


def main(argv=None) -> int:
    import warnings

    # A warning (texts truncated, a head newly initialised) is one line for a person at a terminal.
    warnings.formatwarning = lambda message, category, *rest: f"minibert: warning: {message}\n"
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        args.run(args)
        return 0
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do. Python would complain again
        # when it flushes stdout at exit, so stdout is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell shows for a tool stopped by a closed pipe
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as e:  # bad paths, checkpoints, inputs: say what, not where
        print(f"minibert: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # anything else is minibert's fault, still one line for the person at the terminal
        print(f"minibert: error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1


def one_line(error) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 500 else text[:497] + "..."


FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".tsv": "tsv"}


def run_embed(args) -> None:
    import numpy as np

    from minibert.formats.atomic import atomic_open

    start = time.perf_counter()
    if args.pooling is not None and args.pooling not in POOLINGS:
        raise UsageError(f"minibert embed: unknown pooling {args.pooling!r}; choose from {', '.join(POOLINGS)}")
    for name in ("batch_size", "max_length", "chunk_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"minibert embed: --{name.replace('_', '-')} must be positive, got {value}")
    output = Path(args.output) if args.output else None
    if output is not None and (args.output.endswith(("/", os.sep)) or output.is_dir()):
        return run_embed_folder(args, output, start)
    if args.resume:
        raise UsageError("minibert embed: --resume continues a folder of shards: give -o DIR/")
    fmt = output_format(args.format, output)
    if fmt == "npy" and output is None and sys.stdout.isatty():
        raise UsageError("minibert embed: npy output needs -o FILE (or --format jsonl/tsv for the terminal)")
    if output is not None:
        check_writable(output)
    check_device(args.device)
    texts = read_lines(args.input)
    encoder = load_encoder(args.model, args.device, args.quantize, args.lowercase)
    normalize = False if args.no_normalize else None

    # The output is opened before the work, so an unwritable place fails now, and written to a temporary
    # name that becomes `output` only once every byte is on disk (minibert/formats/atomic.py).
    with atomic_open(output) if output is not None else _stdout() as out:
        vectors = encoder.encode(
            texts, pooling=args.pooling, normalize=normalize, batch_size=args.batch_size, max_length=args.max_length
        )
        if fmt == "npy":
            np.lib.format.write_array_header_1_0(out, np.lib.format.header_data_from_array_1_0(vectors))
            out.write(np.ascontiguousarray(vectors).tobytes())
        else:
            for text, vector in zip(texts, vectors):
                if fmt == "jsonl":
                    line = json.dumps(
                        {"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False
                    )
                else:
                    line = "\t".join(f"{x:.9g}" for x in vector)  # 9 digits: float32 round-trips
                out.write((line + "\n").encode("utf-8"))
    where = output if output is not None else "stdout"
    print(
        f"minibert: embedded {len(texts)} texts ({vectors.shape[1]} dimensions, {fmt}) in "
        f"{time.perf_counter() - start:.1f} s -> {where}",
        file=sys.stderr,
    )


def run_embed_folder(args, output: Path, start: float) -> None:
    """embed into a folder of shards, resumable (minibert/corpus/shards.py)."""
    from minibert.corpus.shards import Source, count_rows, embed_to_folder, weights_sha256
    from minibert.encoder import Encoder
    from minibert.formats.hub import default_model, resolve

    if args.format is not None:
        raise UsageError("minibert embed: a folder output gets .npy shards and a manifest; --format is for one file")
    kind = args.input_format or {".jsonl": "jsonl", ".parquet": "parquet"}.get(Path(args.input).suffix.lower(), "text")
    if kind == "parquet" and args.input == "-":
        raise UsageError("minibert embed: Parquet input must be a file, not stdin")
    if kind == "text" and (args.text_field or args.id_field):
        raise UsageError("minibert embed: --text-field and --id-field are for JSONL and Parquet input")
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"minibert: cannot read {args.input}: no such file")
    if output.exists() and not output.is_dir():
        raise UsageError(f"minibert embed: {output} is a file, not a folder")
    if not output.parent.is_dir():
        raise UsageError(f"minibert embed: cannot write {output}: folder {output.parent} does not exist")
    if kind == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise UsageError("minibert embed: Parquet input needs pyarrow: pip install 'minibert-encoder[parquet]'")
    check_device(args.device)
    if output.is_dir() and any(output.iterdir()) and not (args.resume and (output / "manifest.json").is_file()):
        raise UsageError(
            f"minibert embed: {output} is not empty; choose a new folder, or --resume the run recorded there"
        )
    source = Source(args.input, kind, args.text_field or "text", args.id_field, args.errors)
    folder = resolve(args.model) if args.model else default_model()
    encoder = Encoder.from_pretrained(folder, device=args.device, quantize=args.quantize, lowercase=args.lowercase)
    settings = {
        "pooling": args.pooling or encoder.pooling,
        "normalize": False if args.no_normalize else encoder.normalize,
        "max_length": args.max_length
        or encoder.max_length
        or min(encoder.tokenizer.model_max_length, encoder.model.config.max_position_embeddings),
        "batch_size": args.batch_size,
        "dtype": "float32",
        "quantize": args.quantize,
    }
    model = {"folder": str(Path(folder).resolve()), "weights_sha256": weights_sha256(folder)}
    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=count_rows(source), unit="text", desc="Embedding", file=sys.stderr, dynamic_ncols=True)
    stats = {}
    try:
        manifest = embed_to_folder(
            encoder,
            source,
            output,
            settings=settings,
            model=model,
            chunk_size=args.chunk_size,
            resume=args.resume,
            stats=stats,
            progress=(lambda done: bar.update(done - bar.n)) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    texts = stats.get("texts", 0)
    print(
        f"minibert: embedded {texts} texts ({stats.get('tokens', 0)} tokens, {stats.get('truncated', 0)} "
        f"truncated) in {seconds:.1f} s, {texts / seconds:.1f} texts/s -> {output} "
        f"({manifest['rows']} rows in {len(manifest['shards'])} shards)",
        file=sys.stderr,
    )


def output_format(given: str | None, output: Path | None) -> str:
    """--format, or the output file's extension; a clash between the two is refused."""
    inferred = FORMATS.get(output.suffix.lower()) if output is not None else None
    if given and inferred and given != inferred:
        raise UsageError(f"minibert embed: --format {given} does not match the extension of {output}")
    return given or inferred or "npy"


def check_writable(output: Path, command: str = "embed") -> None:
    if output.is_dir():
        raise UsageError(f"minibert {command}: -o {output} is a folder; give a file name")
    folder = output.parent
    if not folder.is_dir():
        raise UsageError(f"minibert {command}: cannot write {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"minibert {command}: cannot write {output}: folder {folder} is not writable")


def check_device(device) -> None:
    if device is None:
        return
    from minibert.formats.checkpoint import as_device

    try:
        as_device(device)
    except ValueError as e:
        raise UsageError(f"minibert: --device: {e}") from None


class _stdout:
    """sys.stdout's bytes, as a context manager that flushes (a closed pipe surfaces here) and stays open."""

    def __enter__(self):
        return sys.stdout.buffer

    def __exit__(self, *exc):
        sys.stdout.buffer.flush()
        return False


def run_similarity(args) -> None:
    import numpy as np

    from minibert.formats.hub import default_model, resolve

    folder = default_model() if args.model is None else resolve(args.model)
    if args.backend == "auto":  # a few texts: numpy, so that the command never waits for torch to import
        from minibert.numpy_encoder import numpy_can_load

        args.backend = "numpy" if len(args.texts) <= NUMPY_MAX_TEXTS and numpy_can_load(folder) else "torch"
    if args.backend == "numpy":
        from minibert.numpy_encoder import NumpyEncoder

        encoder = NumpyEncoder.from_pretrained(folder, lowercase=args.lowercase)
    else:
        encoder = load_encoder(folder, lowercase=args.lowercase)
    vectors = encoder.encode(args.texts)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    print(format_matrix(args.texts, unit @ unit.T))


def run_tokenize(args) -> None:
    from minibert.formats.hub import default_model
    from minibert.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.model or default_model(), lowercase=args.lowercase)
    batch = tokenizer([args.text], None if args.pair is None else [args.pair], truncation=False)
    ids, types = batch["input_ids"][0].tolist(), batch["token_type_ids"][0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    width = max(display_width(t) for t in tokens + ["token"])
    print(f"{'#':>4}  {pad('token', width)}  {'id':>6}  type")
    for i, (token, id_, type_) in enumerate(zip(tokens, ids, types)):
        print(f"{i:>4}  {pad(token, width)}  {id_:>6}  {type_:>4}")


def _traced_input(args):
    """The model, tokenizer and one (text, pair) batch for inspect and attention, truncated with a warning."""
    import warnings

    from minibert.formats.hub import default_model
    from minibert.model import BertModel
    from minibert.tokenizer import Tokenizer

    folder = args.model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=args.lowercase)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no pooler weights.*")
        model = BertModel.from_pretrained(folder)
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    pair = None if args.pair is None else [args.pair]
    encodings = tokenizer.encode([args.text], pair, max_length=limit)
    if encodings[0].overflowing:
        warnings.warn(f"the text was longer than {limit} tokens and was truncated", stacklevel=2)
    batch = tokenizer.collate(encodings)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    return folder, model, batch, tokens


def run_inspect(args) -> None:
    import torch

    from minibert.tools.trace import (
        attention_summary,
        component_parameters,
        flops_per_token,
        statistics,
        trace,
    )

    folder, model, batch, tokens = _traced_input(args)
    config = model.config
    steps = trace(model, batch)
    last = steps[f"layers.{len(model.layers) - 1}.ffn.norm"][0]  # (L, H)
    vectors = {"mean": last.mean(0), "cls": last[0]}
    if model.pooler is not None:
        vectors["pooler"] = steps["pooler.output"][0]
    names = list(vectors)
    cosines = {
        f"{a}~{b}": round(float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0)), 4)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    params = component_parameters(model)
    length = len(tokens)
    report = {
        "model": str(folder),
        "config": {
            k: getattr(config, k)
            for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
        },
        "tokens": [
            {"token": t, "id": int(i), "segment": int(s)}
            for t, i, s in zip(tokens, batch["input_ids"][0], batch["token_type_ids"][0])
        ],
        "steps": [
            {
                "name": name,
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                **{k: round(v, 6) for k, v in statistics(t).items()},
            }
            for name, t in steps.items()
        ],
        "attention": [
            attention_summary(steps[f"layers.{i}.attention.probs"][0], tokens) for i in range(len(model.layers))
        ],
        "vectors": {"norms": {k: round(float(v.norm()), 4) for k, v in vectors.items()}, "cosines": cosines},
        "parameters": {
            **params,
            "total": sum(params.values()),
            "formula": config.parameter_count(pooler=model.pooler is not None),
        },
        "flops_per_token": flops_per_token(config, length),
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return
    c = report["config"]
    print(
        f"model {folder}: {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads, intermediate {c['intermediate_size']}, vocabulary {c['vocab_size']}"
    )
    width = max(display_width(t) for t in tokens + ["token"])
    print(f"\n{'#':>4}  {pad('token', width)}  {'id':>6}  segment")
    for i, row in enumerate(report["tokens"]):
        print(f"{i:>4}  {pad(row['token'], width)}  {row['id']:>6}  {row['segment']:>7}")
    name_width = max(len(s["name"]) for s in report["steps"])
    print(f"\n{'step':<{name_width}}  {'shape':<16} {'mean':>9} {'std':>9} {'min':>9} {'max':>9} {'norm':>9}")
    for s in report["steps"]:
        shape = "(" + ", ".join(map(str, s["shape"])) + ")"
        print(
            f"{s['name']:<{name_width}}  {shape:<16} {s['mean']:>9.4f} {s['std']:>9.4f} {s['min']:>9.4f} "
            f"{s['max']:>9.4f} {s['norm']:>9.3f}"
        )
    print(
        "\nattention: each head's mean entropy (nats; uniform over the tokens would be "
        f"{float(torch.log(torch.tensor(float(length)))):.2f}), and the tokens [CLS] attends to most"
    )
    for i, a in enumerate(report["attention"]):
        entropies = " ".join(f"{e:.2f}" for e in a["entropy"])
        top = ", ".join(f"{t} {w:.2f}" for t, w in a["cls_attends_to"])
        print(f"  layer {i:>2}: {entropies}   [CLS] -> {top}")
    print(
        "\nvectors: "
        + ", ".join(f"{k} |{v:.3f}|" for k, v in report["vectors"]["norms"].items())
        + "; cosines "
        + ", ".join(f"{k} {v:.3f}" for k, v in cosines.items())
    )
    p = report["parameters"]
    parts = ", ".join(f"{k} {p[k]:,}" for k in params)
    print(f"parameters: {parts}; total {p['total']:,} (formula: {p['formula']:,})")
    print(f"FLOPs per token at length {length}: {report['flops_per_token']:,} (layers x (2 x (4H^2 + 2HI) + 4LH))")


def run_attention(args) -> None:
    from minibert.formats.atomic import write_text
    from minibert.tools.explorer import attention_html, write_png_heatmaps

    output = Path(args.output)
    check_writable(output, "attention")
    if args.png:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("minibert attention: --png needs matplotlib: pip install 'minibert-encoder[viz]'")
    folder, model, batch, tokens = _traced_input(args)
    import torch

    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    attentions = [a[0].numpy() for a in out.attentions]  # one (N, T, T) per layer; no padding in one text
    segments = batch["token_type_ids"][0].tolist()
    title = args.text if args.pair is None else f"{args.text} | {args.pair}"
    write_text(output, attention_html(tokens, attentions, title, segments))
    print(
        f"minibert: wrote {output} ({len(tokens)} tokens, {len(attentions)} layers x {attentions[0].shape[0]} heads)",
        file=sys.stderr,
    )
    if args.png:
        written = write_png_heatmaps(tokens, attentions, args.png, title=Path(str(folder)).name)
        print(f"minibert: wrote {len(written)} heatmaps to {args.png}", file=sys.stderr)


def run_dump(args) -> None:
    import warnings

    from minibert.formats.hub import default_model
    from minibert.tokenizer import Tokenizer
    from minibert.tools.dump import activations, write_dump

    output = Path(args.output)
    check_writable(output, "dump")
    texts = list(args.texts)
    if args.texts_file:
        texts += read_lines(args.texts_file)
    if not texts:
        raise UsageError("minibert dump: give texts, or --texts FILE")
    if args.pair is not None and len(args.pair) != len(texts):
        raise UsageError(f"minibert dump: {len(texts)} texts but {len(args.pair)} --pair texts")
    folder = args.model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=args.lowercase)
    heads = tuple(dict.fromkeys(args.head or ()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no pooler weights.*")
        if heads:
            from minibert.heads import BertForPreTraining

            warnings.simplefilter("ignore")
            head_model = BertForPreTraining.from_pretrained(folder, dtype=args.dtype)
            missing = [n for n in head_model.newly_initialized if n.startswith("cls.")]
            if missing:
                raise UsageError(
                    f"minibert dump: {folder} has no pretraining head weights ({missing[0]}, ...) for --head"
                )
            model = head_model.bert
        else:
            from minibert.model import BertModel

            model, head_model = BertModel.from_pretrained(folder, dtype=args.dtype), None
    limit = min(tokenizer.model_max_length, model.config.max_position_embeddings)
    batch = tokenizer(texts, args.pair, max_length=limit)
    tensors = activations(model, batch, head_model, heads)
    keep = batch["attention_mask"].bool()
    wordpieces = [tokenizer.convert_ids_to_tokens(ids[k]) for ids, k in zip(batch["input_ids"], keep)]
    write_dump(
        output,
        tensors,
        {
            "texts": texts,
            "pairs": args.pair,
            "wordpieces": wordpieces,
            "config": model.config.to_dict(),
            "model": str(folder),
            "dtype": args.dtype,
            "device": "cpu",
        },
    )
    print(
        f"minibert: wrote {output}: {len(tensors)} tensors for {len(texts)} texts, "
        f"{output.stat().st_size / 1e6:.1f} MB",
        file=sys.stderr,
    )


def run_compare(args) -> None:
    from minibert.tools.compare import compare, format_report
    from minibert.tools.dump import read_dump

    reference, _ = read_dump(args.reference)
    candidate, _ = read_dump(args.candidate)
    report = compare(reference, candidate, atol=args.atol, rtol=args.rtol)
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    if not report.ok:
        raise SystemExit(1)


def run_parity(args) -> None:
    from minibert.formats.hub import default_model
    from minibert.tools.parity import format_parity, parity

    check_device(args.device)
    texts = read_lines(args.texts_file) if args.texts_file else None
    try:
        report = parity(
            args.model or default_model(), device=args.device or "cpu", dtype=args.dtype, texts=texts, atol=args.atol
        )
    except ImportError as e:
        raise UsageError(f"minibert parity: {e}") from None
    print(json.dumps(report, indent=1) if args.json else format_parity(report))
    if not report["ok"]:
        raise SystemExit(1)


def run_quantize(args) -> None:
    from minibert.encoder import Encoder
    from minibert.formats.atomic import check_folder_target

    check_folder_target(Path(args.out), args.force)
    start = time.perf_counter()
    encoder = Encoder.from_pretrained(args.model, quantize="int8", lowercase=args.lowercase)
    encoder.save_pretrained(args.out, force=args.force)
    print(f"minibert: wrote {args.out}, int8, in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def run_fill_mask(args) -> None:
    import warnings

    from minibert.heads import BertForMaskedLM, fill_mask
    from minibert.tokenizer import Tokenizer

    if args.top_k < 1:
        raise UsageError(f"minibert fill-mask: --top-k must be positive, got {args.top_k}")
    folder = args.model
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=args.lowercase)
    masks = tokenizer.tokenize(args.text).count("[MASK]")
    if masks != 1:
        raise UsageError(f"minibert fill-mask: the text must hold exactly one [MASK], it holds {masks}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing head is reported below, in one line
        model = BertForMaskedLM.from_pretrained(folder)
    if any(name.startswith("cls.predictions.") for name in model.newly_initialized):
        raise UsageError(
            f"minibert fill-mask: {folder} has no masked-language-model head (cls.predictions.*); "
            "use a BertForPreTraining or BertForMaskedLM checkpoint"
        )
    candidates = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    width = max(display_width(c["token"]) for c in candidates)
    for c in candidates:
        print(f"{pad(c['token'], width)}  {c['score']:.4f}")


def run_convert(args) -> None:
    from minibert.formats.convert import convert

    out = convert(args.src, args.out, lowercase=args.lowercase, force=args.force)
    print(f"minibert: wrote {out}", file=sys.stderr)


def load_encoder(model, device=None, quantize=None, lowercase=None):
    from minibert.encoder import Encoder

    return Encoder.from_pretrained(model, device=device, quantize=quantize, lowercase=lowercase)


def read_lines(source: str) -> list[str]:
    """One text per line, from a file or stdin; a blank line is an (empty) text of its own."""
    name = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise UsageError(f"minibert: cannot read {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"minibert: {name} is not UTF-8 text (byte {e.start})") from None
    # One text per "\n" ("\r\n" too); not str.splitlines(), which also breaks at \f, \v, \x1c-\x1e,
    # U+0085, U+2028 and U+2029, characters a text may hold.
    text = text.removeprefix("\ufeff")
    lines = text.removesuffix("\n").split("\n") if text else []
    lines = [line.removesuffix("\r") for line in lines]
    if not lines:
        raise UsageError(f"minibert: {name} is empty: give one text per line")
    return lines


def display_width(text: str) -> int:
    """Terminal columns: CJK and other wide characters take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def clip(text: str, width: int) -> str:
    """Cut to `width` columns, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out = ""
    for ch in text:
        if display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


def format_matrix(labels: list[str], matrix, label_width: int = 40) -> str:
    """A labelled table, two decimals: row i is text i, column i is [i]."""
    rows = [f"[{i + 1}] {clip(text, label_width)}" for i, text in enumerate(labels)]
    width = max(display_width(r) for r in rows)
    cells = [f"[{i + 1}]".rjust(6) for i in range(len(labels))]
    lines = [" " * width + "".join(cells)]
    for label, values in zip(rows, matrix):
        lines.append(pad(label, width) + "".join(f"{float(v):6.2f}" for v in values))
    return "\n".join(lines)
