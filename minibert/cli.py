"""The `minibert` command line: its commands, options and help (argparse), and `main`, which runs one and
turns whatever goes wrong into one line on stderr and an exit code. What each command does with its
parsed arguments is in minibert/commands.py."""

from __future__ import annotations

import argparse
import os
import sys

import minibert
from minibert.commands import (
    UsageError,
    run_attention,
    run_classify,
    run_compare,
    run_convert,
    run_dump,
    run_embed,
    run_fill_mask,
    run_inspect,
    run_parity,
    run_quantize,
    run_rerank,
    run_search,
    run_serve,
    run_similarity,
    run_tokenize,
)
from minibert.engine.pooling import DENSE_POOLINGS
from minibert.serve.limits import Limits
from minibert.settings import COMPUTE_DTYPES, DTYPE_NAMES, NUMPY_MAX_TEXTS
from minibert.tools.terminal import printable


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)", prog=self.prog)


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
CONVERT_EXAMPLES = """examples:
  minibert convert chinese_L-12_H-768_A-12 bert-base-chinese
  minibert convert --cased my_tf_bert out/
"""
QUANTIZE_EXAMPLES = """examples:
  minibert quantize all-MiniLM-L6-v2-folder minilm-int8
  minibert embed --model minilm-int8 sentences.txt -o vectors.npy
"""
SERVE_EXAMPLES = """examples:
  minibert serve                                   # all-MiniLM-L6-v2 on http://127.0.0.1:8080
  minibert serve --model minilm-int8 --port 9000 --api-key "$KEY"
  minibert serve --model all-MiniLM-L6-v2 --model cross-encoder/ms-marco-MiniLM-L-6-v2   # /v1/rerank too
  curl -s localhost:8080/v1/embeddings -H 'Content-Type: application/json' -d '{"input": ["a text"]}'
Needs the serve extra (pip install '.[serve]' in a clone). Routes: minibert/serve/app.py.
"""
RERANK_EXAMPLES = """examples:
  minibert rerank --model cross-encoder/ms-marco-MiniLM-L-6-v2 "what do rivers do" "Rivers carry water." "Paris is big."
  minibert rerank --model ce-folder "what do rivers do" --documents hits.txt --top-k 5 --json
"""
SEARCH_EXAMPLES = """examples:
  minibert embed corpus.txt -o vectors/ && minibert search vectors/ "how do rivers shape towns" --top-k 5
  minibert search vectors/ "first query" "second query" --json
"""
CLASSIFY_EXAMPLES = """examples:
  minibert classify --model my-sentiment-model "What a lovely day." "This is awful."
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

    def add(name, run, help, examples, model="default", case=True, description=None, text=False):
        """A command: --model (default / required / none), --uncased/--cased, and a TEXT [TEXT] pair."""
        sub = commands.add_parser(
            name,
            help=help,
            description=description or help,
            epilog=examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if model == "default":
            sub.add_argument(
                "--model", metavar="M", help="model folder or Hugging Face Hub id (default: all-MiniLM-L6-v2)"
            )
        elif model == "required":
            sub.add_argument("--model", metavar="M", required=True, help="model folder or Hugging Face Hub id")
        if case:
            group = sub.add_mutually_exclusive_group()
            group.add_argument(
                "--uncased",
                dest="lowercase",
                action="store_const",
                const=True,
                help="lower-case text before tokenizing (for a vocab.txt folder whose name does not say)",
            )
            group.add_argument("--cased", dest="lowercase", action="store_const", const=False, help="keep case")
        if text:
            sub.add_argument("text", metavar="TEXT")
            sub.add_argument("pair", nargs="?", metavar="TEXT", help="a second text, segment B")
        sub.set_defaults(run=run)
        return sub

    embed = add("embed", run_embed, "embed one text per line into vectors", EMBED_EXAMPLES)
    embed.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="input text file (default: stdin)")
    embed.add_argument("--pooling", metavar="P", help=f"one of {', '.join(DENSE_POOLINGS)} (default: the model's)")
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
        "--dtype",
        choices=COMPUTE_DTYPES,
        help="compute dtype (default: float32); bfloat16 is faster only where the CPU has bfloat16 dot "
        "products (AVX512_BF16, AMX), and its vectors are within about 0.9999 cosine of float32's",
    )
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
        help="a line that is not UTF-8: "
        "stop with its line number (strict, default) or replace the bad bytes with U+FFFD",
    )
    embed.add_argument(
        "--chunk-size",
        type=int,
        metavar="N",
        help="rows per shard with -o DIR/ (default: 4096, "
        "or the recorded run's with --resume); a shard is also written every 30 s",
    )
    embed.add_argument("--resume", action="store_true", help="continue a folder output after its last finished shard")
    embed.add_argument(
        "--force",
        action="store_true",
        help="start a folder output over, deleting the run recorded there (its manifest, shards and ids; nothing else)",
    )
    embed.add_argument(
        "--sparse",
        action="store_true",
        help="SPLADE sparse vectors from a masked-LM --model, one JSON line per text: indices and values",
    )
    embed.add_argument("--top-k", type=int, metavar="K", help="with --sparse: keep each text's K largest weights")
    embed.add_argument(
        "--quantize",
        choices=("int8",),
        help="int8: faster on CPU, vectors within about 0.99 cosine "
        "of float32; calibrates at every start (seconds): `minibert quantize` saves a calibrated "
        "model once, and --model then loads it without calibrating",
    )

    similarity = add(
        "similarity", run_similarity, "print the cosine similarity matrix of a few texts", SIMILARITY_EXAMPLES
    )
    similarity.add_argument("texts", nargs="+", metavar="TEXT")
    similarity.add_argument(
        "--backend",
        choices=("auto", "torch", "numpy"),
        default="auto",
        help="numpy computes "
        "without loading torch, which is most of a short run's time; auto (default) picks it "
        f"for up to {NUMPY_MAX_TEXTS} texts of a model folder with float weights in "
        "model.safetensors, torch otherwise",
    )

    convert = add(
        "convert",
        run_convert,
        "write a checkpoint (e.g. Google's TensorFlow release) as a Hugging Face folder",
        CONVERT_EXAMPLES,
        model=None,
        description="Write a checkpoint folder that minibert reads "
        "(a Google TensorFlow release such as uncased_L-12_H-768_A-12, a .bin or safetensors folder) as a "
        "Hugging Face folder: config.json, model.safetensors, vocab.txt, tokenizer.json, "
        "tokenizer_config.json.",
    )
    convert.add_argument("src", metavar="SRC_DIR")
    convert.add_argument("out", metavar="OUT_DIR")
    convert.add_argument("--force", action="store_true", help="replace OUT_DIR if it is not empty")

    fill = add(
        "fill-mask",
        run_fill_mask,
        "the most likely wordpieces for the [MASK] in a text",
        FILL_MASK_EXAMPLES,
        model="required",
    )
    fill.add_argument("text", metavar="TEXT", help="a text with one [MASK]")
    fill.add_argument("--top-k", type=int, default=5, metavar="K", help="how many candidates (default: 5)")

    inspect = add(
        "inspect",
        run_inspect,
        "trace one forward pass: every step's shape and statistics, attention, vectors",
        INSPECT_EXAMPLES,
        text=True,
    )
    inspect.add_argument("--json", action="store_true", help="print everything as one JSON object")

    attention = add(
        "attention",
        run_attention,
        "write an attention explorer page (and PNG heatmaps) for a text",
        ATTENTION_EXAMPLES,
        text=True,
    )
    attention.add_argument(
        "-o", "--output", metavar="HTML", help="the page to write (default: attention.html, unless --png alone)"
    )
    attention.add_argument(
        "--png",
        metavar="DIR",
        help="also write one heatmap per layer into DIR (needs matplotlib, the viz extra: pip install '.[viz]')",
    )

    dump = add(
        "dump",
        run_dump,
        "write golden activations: every step of the forward pass, in one safetensors file",
        DUMP_EXAMPLES,
    )
    dump.add_argument("texts", nargs="*", metavar="TEXT", help="texts (or --texts FILE)")
    dump.add_argument("--texts", dest="texts_file", metavar="FILE", help="one text per line")
    dump.add_argument(
        "--pair", action="append", metavar="TEXT", help="a second text (segment B) for each text, in order; repeat it"
    )
    dump.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    dump.add_argument("--head", action="append", choices=("mlm", "nsp"), help="also dump these head logits")
    dump.add_argument("-o", "--output", metavar="FILE", required=True, help="the .safetensors file to write")

    compare = add(
        "compare",
        run_compare,
        "compare two activation dumps and name the first tensor that goes wrong",
        COMPARE_EXAMPLES,
        model=None,
        case=False,
        description="Compare CANDIDATE with REFERENCE (both "
        "written by minibert dump; the candidate may instead be a folder of <step>.npy files) at real "
        "positions; exits 1 if any tensor is beyond tolerance or missing.",
    )
    compare.add_argument("reference", metavar="REFERENCE")
    compare.add_argument("candidate", metavar="CANDIDATE")
    compare.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance (default 1e-5)")
    compare.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    compare.add_argument(
        "--subset",
        action="store_true",
        help="compare only the steps the candidate holds (by default every step of the reference must be there)",
    )
    compare.add_argument("--json", action="store_true", help="print the report as JSON")

    parity = add(
        "parity",
        run_parity,
        "compare minibert with Hugging Face transformers on a checkpoint, output by output",
        PARITY_EXAMPLES,
    )
    parity.add_argument("--device", help="cpu (default) or cuda")
    parity.add_argument("--dtype", default="float32", choices=COMPUTE_DTYPES)
    parity.add_argument(
        "--texts",
        dest="texts_file",
        metavar="FILE",
        help="one text per line (default: a few built-in sentences and a pair)",
    )
    parity.add_argument("--atol", type=float, help="tolerance (default 1e-5 in float32, 1e-3 in half precision)")
    parity.add_argument("--json", action="store_true", help="print the report as JSON")

    quantize = add(
        "quantize",
        run_quantize,
        "calibrate an int8 model once and save it: it then loads in a second",
        QUANTIZE_EXAMPLES,
        model=None,
        description="Quantize MODEL's encoder layers to int8 (calibrated "
        "now, as Encoder.from_pretrained(quantize='int8') does at every load) and write the result to "
        "OUT: int8 weights with their scales and smoothing factors, the tokenizer and the "
        "sentence-transformers metadata.",
    )
    quantize.add_argument(
        "model", metavar="MODEL", nargs="?", help="model folder or Hub id (default: all-MiniLM-L6-v2)"
    )
    quantize.add_argument("out", metavar="OUT")
    quantize.add_argument("--force", action="store_true", help="replace OUT if it is not empty")

    serve = add(
        "serve",
        run_serve,
        "serve embedders, rerankers, classifiers and sparse encoders over HTTP (OpenAI, TEI and Cohere routes)",
        SERVE_EXAMPLES,
        model=None,
    )
    serve.add_argument(
        "--model",
        action="append",
        metavar="M",
        help="model folder or Hub id; repeat to serve several, each with its own queue (default: all-MiniLM-L6-v2). "
        "What each computes is read from its folder: a sequence-classification checkpoint is a reranker (one "
        "label) or a classifier, a sentence-transformers SparseEncoder folder a sparse encoder, any other an "
        "embedder",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    serve.add_argument(
        "--served-model-name",
        action="append",
        metavar="NAME",
        help="what requests give as model, one per --model in order (default: the folder's name; all-MiniLM-L6-v2)",
    )
    serve.add_argument(
        "--task",
        action="append",
        choices=("embed", "rerank", "classify", "sparse"),
        help="what a model computes, one per --model in order (default: read from its folder); e.g. sparse for "
        "a bare masked-LM SPLADE folder such as naver/splade-cocondenser-*",
    )
    serve.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    serve.add_argument("--dtype", choices=COMPUTE_DTYPES, help="compute dtype (default: float32)")
    serve.add_argument("--quantize", choices=("int8",), help="int8 on CPU, calibrated at start (see quantize)")
    serve.add_argument("--max-length", type=int, metavar="N", help="tokens per input (default: the model's)")
    defaults = Limits()
    for name, help in (  # each a field of minibert/serve/limits.py, which holds the defaults
        ("max_batch_tokens", "real tokens per request batch, the texts of many requests computed together"),
        ("max_concurrent_requests", "admitted at once, until each answer is sent; then 429"),
        (
            "max_queue_seconds",
            "admit only while the queued work would take less (at the speed of recent batches); then 429",
        ),
        ("max_request_texts", "inputs per request; then 413"),
        ("max_body_bytes", "body size; then 413"),
        ("max_connections", "open at once; one more gets 503"),
        ("max_header_bytes", "the request line and headers; then 431"),
        ("header_seconds", "to send them, from a request's first byte; then 408"),
        ("body_seconds", "to send a body; then 408"),
        ("idle_seconds", "a connection without a request in progress is closed after this"),
        ("write_seconds", "for a client to read an answer; then the connection is dropped"),
        ("drain_seconds", "after SIGTERM or Ctrl-C, to finish what is in flight; then 503"),
    ):
        kind = type(getattr(defaults, name))
        serve.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=getattr(defaults, name),
            metavar="N" if kind is int else "S",
            help=help + " (%(default)s)",
        )
    serve.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    serve.add_argument("--api-key", metavar="KEY", help="require Bearer KEY (default: $MINIBERT_API_KEY, or none)")
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow browsers from ORIGIN (repeat)")

    rerank = add(
        "rerank",
        run_rerank,
        "rank documents for a query with a cross-encoder",
        RERANK_EXAMPLES,
        model="required",
        case=False,
    )
    rerank.add_argument("query", metavar="QUERY")
    rerank.add_argument("documents", nargs="*", metavar="DOC", help="documents (or --documents FILE)")
    rerank.add_argument("--documents", dest="documents_file", metavar="FILE", help="one document per line")
    rerank.add_argument("--top-k", type=int, metavar="K", help="show the K best (default: all)")
    rerank.add_argument("--json", action="store_true", help="print the ranking as JSON")

    search = add(
        "search",
        run_search,
        "the nearest texts of a corpus embedded with `minibert embed -o DIR/`",
        SEARCH_EXAMPLES,
        model=None,
        case=False,
    )
    search.add_argument("vectors", metavar="VECTORS/", help="a folder written by minibert embed -o DIR/")
    search.add_argument("queries", nargs="+", metavar="QUERY")
    search.add_argument("--top-k", type=int, default=10, metavar="K", help="hits per query (default: 10)")
    search.add_argument("--model", metavar="M", help="the model folder, where it has moved since the vectors were made")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")

    classify = add(
        "classify",
        run_classify,
        "label texts with a sequence-classification model",
        CLASSIFY_EXAMPLES,
        model="required",
    )
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--top-k", type=int, default=1, metavar="K", help="labels per text, 0 for all (default: 1)")
    classify.add_argument("--json", action="store_true", help="print the labels as JSON")

    add(
        "tokenize",
        run_tokenize,
        "show the wordpieces, ids and token types of a text (or pair)",
        TOKENIZE_EXAMPLES,
        text=True,
    )
    return parser


def main(argv=None) -> int:
    import warnings

    # A warning (texts truncated, a head newly initialised) is one line for a person at a terminal, written
    # above a progress bar rather than through it.
    warnings.showwarning = show_warning
    parser = build_parser()
    args = None
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # argparse would name the top-level command; the fault is in the subcommand's arguments
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see --help)")
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
        print(f"{e.prog or who(args)}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError, ImportError) as e:  # bad paths, checkpoints, inputs: say what, not where
        print(f"{who(args)}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # anything else is minibert's fault, still one line for the person at the terminal
        print(f"{who(args)}: error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return 1


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = f"minibert: warning: {printable(str(message))}"
    if "tqdm" in sys.modules:  # a bar may be on screen: tqdm.write moves it below the line
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def who(args) -> str:
    """Every error line starts with the command it comes from: `minibert embed: error: ...`."""
    command = getattr(args, "command", None)
    return f"minibert {command}" if command else "minibert"


def one_line(error) -> str:
    """The error's text on one line, at most 500 characters, with control characters shown escaped (a file
    name or a tensor name may hold terminal escapes)."""
    text = printable(" ".join(str(error).split()))
    return text if len(text) <= 500 else text[:497] + "..."
