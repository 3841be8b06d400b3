"""The `minibert` command line: embed, similarity, tokenize."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata

import minibert

POOLINGS = ("mean", "cls", "pooler", "max", "mean_sqrt_len")  # as minibert.encoder.POOLINGS, without importing torch


class UsageError(Exception):
    """A bad argument or input: one line on stderr, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


EMBED_EXAMPLES = """examples:
  minibert embed sentences.txt -o vectors.npy
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

    def add(name, help, examples):
        sub = commands.add_parser(name, help=help, description=help, epilog=examples,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--model", metavar="M", help="model folder or Hugging Face Hub id "
                         "(default: all-MiniLM-L6-v2)")
        return sub

    embed = add("embed", "embed one text per line into vectors", EMBED_EXAMPLES)
    embed.add_argument("input", nargs="?", default="-", metavar="FILE|-", help="input text file (default: stdin)")
    embed.add_argument("--pooling", metavar="P", help=f"one of {', '.join(POOLINGS)} (default: the model's)")
    embed.add_argument("--no-normalize", action="store_true", help="do not scale vectors to unit length")
    embed.add_argument("--batch-size", type=int, default=32, metavar="N", help="texts per batch (default: 32)")
    embed.add_argument("--max-length", type=int, metavar="N", help="truncate texts to N tokens "
                       "(default: the model's)")
    embed.add_argument("--format", choices=("npy", "jsonl", "tsv"), default="npy",
                       help="npy (default, to -o), jsonl or tsv (to stdout unless -o)")
    embed.add_argument("-o", "--output", metavar="OUT", help="output file")
    embed.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cpu)")
    embed.add_argument("--quantize", choices=("int8",), help="int8: faster on CPU, vectors within about "
                       "0.99 cosine of float32")
    embed.set_defaults(run=run_embed)

    similarity = add("similarity", "print the cosine similarity matrix of a few texts", SIMILARITY_EXAMPLES)
    similarity.add_argument("texts", nargs="+", metavar="TEXT")
    similarity.set_defaults(run=run_similarity)

    convert = commands.add_parser(
        "convert", help="write a checkpoint (e.g. Google's TensorFlow release) as a Hugging Face folder",
        description="Write a checkpoint folder that minibert reads (a Google TensorFlow release such as "
                    "uncased_L-12_H-768_A-12, a .bin or safetensors folder) as a Hugging Face folder: "
                    "config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json.",
        epilog="examples:\n  minibert convert chinese_L-12_H-768_A-12 bert-base-chinese\n"
               "  minibert convert --cased my_tf_bert out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("src", metavar="SRC_DIR")
    convert.add_argument("out", metavar="OUT_DIR")
    case = convert.add_mutually_exclusive_group()
    case.add_argument("--uncased", dest="lowercase", action="store_const", const=True,
                      help="lower-case text (when the folder name does not say)")
    case.add_argument("--cased", dest="lowercase", action="store_const", const=False, help="keep case")
    convert.set_defaults(run=run_convert)

    fill = add("fill-mask", "the most likely wordpieces for the [MASK] in a text", FILL_MASK_EXAMPLES)
    fill.add_argument("text", metavar="TEXT", help="a text with one [MASK]")
    fill.add_argument("--top-k", type=int, default=5, metavar="K", help="how many candidates (default: 5)")
    fill.set_defaults(run=run_fill_mask)

    tokenize = add("tokenize", "show the wordpieces, ids and token types of a text (or pair)", TOKENIZE_EXAMPLES)
    tokenize.add_argument("text", metavar="TEXT")
    tokenize.add_argument("pair", nargs="?", metavar="TEXT", help="a second text, segment B")
    tokenize.set_defaults(run=run_tokenize)
    return parser


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
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as e:  # bad paths, checkpoints, inputs: say what, not where
        print(f"minibert: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_embed(args) -> None:
    import numpy as np

    if args.pooling is not None and args.pooling not in POOLINGS:
        raise UsageError(f"minibert embed: unknown pooling {args.pooling!r}; choose from {', '.join(POOLINGS)}")
    for name in ("batch_size", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"minibert embed: --{name.replace('_', '-')} must be positive, got {value}")
    if args.format == "npy" and args.output is None and sys.stdout.isatty():
        raise UsageError("minibert embed: npy output needs -o FILE (or --format jsonl/tsv for the terminal)")
    texts = read_lines(args.input)
    encoder = load_encoder(args.model, args.device, args.quantize)
    normalize = False if args.no_normalize else None
    vectors = encoder.encode(texts, pooling=args.pooling, normalize=normalize, batch_size=args.batch_size,
                             max_length=args.max_length)

    if args.format == "npy":
        if args.output is None:
            np.save(sys.stdout.buffer, vectors)
        else:
            np.save(args.output, vectors)  # np.save appends .npy to a name without it
        return
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for text, vector in zip(texts, vectors):
            if args.format == "jsonl":
                out.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]},
                                     ensure_ascii=False) + "\n")
            else:
                out.write("\t".join(f"{x:.9g}" for x in vector) + "\n")  # 9 digits: float32 round-trips
    finally:
        if out is not sys.stdout:
            out.close()


def run_similarity(args) -> None:
    from minibert.encoder import similarity

    encoder = load_encoder(args.model)
    vectors = encoder.encode(args.texts)
    print(format_matrix(args.texts, similarity(vectors, vectors)))


def run_tokenize(args) -> None:
    from minibert.hub import default_model
    from minibert.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(args.model or default_model())
    batch = tokenizer([args.text], None if args.pair is None else [args.pair], truncation=False)
    ids, types = batch["input_ids"][0].tolist(), batch["token_type_ids"][0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids)
    width = max(display_width(t) for t in tokens + ["token"])
    print(f"{'#':>4}  {pad('token', width)}  {'id':>6}  type")
    for i, (token, id_, type_) in enumerate(zip(tokens, ids, types)):
        print(f"{i:>4}  {pad(token, width)}  {id_:>6}  {type_:>4}")


def run_fill_mask(args) -> None:
    import warnings

    from minibert.heads import BertForMaskedLM, fill_mask
    from minibert.hub import default_model
    from minibert.tokenizer import Tokenizer

    if args.top_k < 1:
        raise UsageError(f"minibert fill-mask: --top-k must be positive, got {args.top_k}")
    folder = args.model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder)
    masks = tokenizer.tokenize(args.text).count("[MASK]")
    if masks != 1:
        raise UsageError(f"minibert fill-mask: the text must hold exactly one [MASK], it holds {masks}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing head is reported below, in one line
        model = BertForMaskedLM.from_pretrained(folder)
    if any(name.startswith("cls.predictions.") for name in model.newly_initialized):
        raise UsageError(f"minibert fill-mask: {folder} has no masked-language-model head (cls.predictions.*); "
                         "use a BertForPreTraining or BertForMaskedLM checkpoint")
    candidates = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    width = max(display_width(c["token"]) for c in candidates)
    for c in candidates:
        print(f"{pad(c['token'], width)}  {c['score']:.4f}")


def run_convert(args) -> None:
    from minibert.convert import convert

    out = convert(args.src, args.out, lowercase=args.lowercase)
    print(f"wrote {out}")


def load_encoder(model, device=None, quantize=None):
    from minibert.encoder import Encoder

    return Encoder.from_pretrained(model, device=device, quantize=quantize)


def read_lines(source: str) -> list[str]:
    """One text per line, from a file or stdin; a blank line is an (empty) text of its own."""
    name = "stdin" if source == "-" else source
    try:
        data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()
    except OSError as e:
        raise UsageError(f"minibert embed: cannot read {name}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"minibert embed: {name} is not UTF-8 text (byte {e.start})") from None
    lines = text.removeprefix("\ufeff").splitlines()
    if not lines:
        raise UsageError(f"minibert embed: {name} is empty: give one text per line")
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
