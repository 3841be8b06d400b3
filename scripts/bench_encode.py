"""minibert's Encoder.encode against sentence-transformers' encode, side by side in one process.

Both embed the same variable-length corpus (log-normal token lengths, a few to a few hundred) with the
same model and batch size on CPU in float32; runs alternate after a warm-up and the median is reported.

    python scripts/bench_encode.py [--texts 1000] [--batch-size 32] [--repeats 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from minibert import Encoder
from minibert.fast.cpu import features, model_name
from minibert.formats.hub import default_model


def make_corpus(tokenizer, n: int, seed: int = 0) -> list[str]:
    """n texts of whole vocabulary words; word counts log-normal (median ~40), clipped to [2, 400]."""
    rng = np.random.default_rng(seed)
    vocab = tokenizer.backend.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2)
    lengths = np.clip(rng.lognormal(mean=np.log(40), sigma=0.9, size=n), 2, 400).astype(int)
    return [" ".join(rng.choice(words, size=k)) for k in lengths]


def timed(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    folder = str(args.model or default_model())
    ours = Encoder.from_pretrained(folder)
    theirs = SentenceTransformer(folder, device="cpu")
    corpus = make_corpus(ours.tokenizer, args.texts)
    tokens = [len(e.ids) for e in ours.tokenizer.encode(corpus, max_length=ours.max_length)]

    print(
        f"# {model_name()}, {features().describe()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"# model {folder}")
    print(
        f"# corpus: {len(corpus)} texts, tokens per text min {min(tokens)} median {int(np.median(tokens))} "
        f"max {max(tokens)}, {sum(tokens)} tokens; batch size {args.batch_size}"
    )

    run_ours = lambda: ours.encode(corpus, batch_size=args.batch_size)  # noqa: E731
    run_theirs = lambda: theirs.encode(corpus, batch_size=args.batch_size)  # noqa: E731
    ours.encode(corpus[:64], batch_size=args.batch_size)  # warm-up
    theirs.encode(corpus[:64], batch_size=args.batch_size)
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        t, v_ours = timed(run_ours)
        t_ours.append(t)
        t, v_theirs = timed(run_theirs)
        t_theirs.append(t)
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    diff = float(np.abs(v_ours - v_theirs).max())
    print(f"{'':24}{'seconds':>10}{'texts/s':>10}")
    print(f"{'minibert':24}{a:10.2f}{len(corpus) / a:10.1f}")
    print(f"{'sentence-transformers':24}{b:10.2f}{len(corpus) / b:10.1f}")
    print(f"ratio (sentence-transformers / minibert): {b / a:.2f}x   max abs diff of embeddings: {diff:.2e}")


if __name__ == "__main__":
    main()
