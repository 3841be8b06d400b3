"""The rerank case of scripts/bench.py: minibert's CrossEncoder and SparseEncoder against sentence-transformers'
side by side, alternating, in one process.

rank    1 query x --rerank-passages passages of 50-250 words (vocabulary words) through `rank`, as a search
        backend reranks its hits: minibert float32, bfloat16 (where the CPU has native bf16), int8, and
        sentence-transformers' CrossEncoder.rank in float32; batch size 32 for all. The cross-encoder has
        cross-encoder/ms-marco-MiniLM-L-6-v2's shape and all-MiniLM-L6-v2's encoder weights (its classifier
        random): the same work per pair.
sparse  --sparse-docs documents of the corpus (log-normal lengths, median ~40 words) through SparseEncoder:
        minibert float32, bfloat16 where native, int8, against sentence-transformers' SparseEncoder.encode;
        a SPLADE model of all-MiniLM-L6-v2's shape (its encoder weights, a masked-LM head initialised by
        transformers), max 256 tokens.

Each line gives seconds (median of --repeats), the speed-up over sentence-transformers float32, and how far
the output is from sentence-transformers' (scores: max abs difference and the top-10 overlap; sparse: max
abs weight difference and the share of non-zero indices in common).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from minibert.fast.cpu import features
from minibert.formats.hub import default_model

TARGET = 1.5  # minibert float32 against sentence-transformers float32


def passages(tokenizer, n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = tokenizer.backend.get_vocab()
    words = sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2)
    return [" ".join(rng.choice(words, size=int(k))) for k in rng.integers(50, 251, size=n)]


def cross_encoder_folder(tmp):
    """A cross-encoder of ms-marco-MiniLM-L-6-v2's shape: all-MiniLM-L6-v2's encoder, one label, saved by
    sentence-transformers (its default activation, a sigmoid)."""
    import transformers
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(default_model(), num_labels=1)
    model.save_pretrained(tmp / "ce-hf")
    transformers.AutoTokenizer.from_pretrained(default_model()).save_pretrained(tmp / "ce-hf")
    CrossEncoder(str(tmp / "ce-hf"), device="cpu", max_length=512).save(str(tmp / "ce"))
    return tmp / "ce"


def splade_folder(tmp):
    """A SPLADE model of all-MiniLM-L6-v2's shape, saved as a sentence-transformers SparseEncoder."""
    import transformers
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM.from_pretrained(default_model())
    model.save_pretrained(tmp / "mlm")
    transformers.AutoTokenizer.from_pretrained(default_model()).save_pretrained(tmp / "mlm")
    transformer = MLMTransformer(str(tmp / "mlm"), max_seq_length=256)
    SparseEncoder(modules=[transformer, SpladePooling(pooling_strategy="max")], device="cpu").save(str(tmp / "st"))
    return tmp / "st"


def verdict(ratio: float) -> None:
    met = "met" if ratio >= TARGET else "NOT met"
    print(f"target: minibert float32 >= {TARGET}x sentence-transformers float32: {ratio:.2f}x, {met}")


def top10(scores) -> set:
    return set(np.argsort(-np.asarray(scores), kind="stable")[:10].tolist())


def case_rerank(args, tmp, results: dict) -> None:
    from bench import alternate
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers.sparse_encoder import SparseEncoder as STSparseEncoder

    from minibert.classify import CrossEncoder
    from minibert.sparse import SparseEncoder

    native = features().native_bf16
    variants = {"float32": {}, **({"bfloat16": {"dtype": "bfloat16"}} if native else {}), "int8": {"quantize": "int8"}}
    out = {}

    folder = cross_encoder_folder(tmp)
    reference = STCrossEncoder(str(folder), device="cpu")
    ours = {name: CrossEncoder.from_pretrained(folder, **kw) for name, kw in variants.items()}
    query = "how do rivers shape the towns that grow along their banks"
    docs = passages(ours["float32"].encoder.tokenizer, args.rerank_passages)
    got = {}

    def ranked(name, model):
        def run():
            ranking = model.rank(query, docs)  # [{"corpus_id", "score"}], best first
            scores = np.empty(len(docs), np.float32)
            for hit in ranking:
                scores[hit["corpus_id"]] = hit["score"]
            got[name] = scores

        return run

    fns = {f"minibert {name}": ranked(name, m) for name, m in ours.items()}
    fns["sentence-transformers float32"] = ranked("st", reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = alternate(fns, args.repeats)
    base = seconds["sentence-transformers float32"]
    tokens = sum(len(e.ids) for e in ours["float32"].encoder.tokenizer.encode([query] * len(docs), docs))
    print(
        f"\n## rerank: 1 query x {len(docs)} passages of 50-250 words ({tokens} tokens), ms-marco-MiniLM-L-6-v2 "
        "shape, batch 32"
    )
    print(f"{'':32}{'seconds':>9}{'vs s-t':>9}{'max |diff|':>12}{'top-10 same':>13}")
    rank = {}
    for name, s in seconds.items():
        key = name.split()[-1] if name.startswith("minibert") else "st"
        diff = float(np.abs(np.asarray(got[key]) - np.asarray(got["st"])).max())
        same = len(top10(got[key]) & top10(got["st"]))
        print(f"{name:32}{s:9.3f}{base / s:8.2f}x{diff:12.1e}{same:10d}/10")
        rank[name] = {"seconds": s, "speedup": base / s, "max_abs_diff": diff, "top10_same": same}
    verdict(base / seconds["minibert float32"])
    out["rank"] = rank

    folder = splade_folder(tmp)
    reference = STSparseEncoder(str(folder), device="cpu")
    ours = {name: SparseEncoder.from_pretrained(folder, **kw) for name, kw in variants.items()}
    from bench_encode import make_corpus

    corpus = make_corpus(ours["float32"].tokenizer, args.sparse_docs, seed=2)
    dense = {}
    fns = {
        f"minibert {name}": (lambda name=name, m=m: dense.__setitem__(name, m.encode(corpus)))
        for name, m in ours.items()
    }
    fns["sentence-transformers float32"] = lambda: dense.__setitem__(
        "st", reference.encode(corpus, convert_to_tensor=True)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = alternate(fns, args.repeats)
    want = dense["st"].to_dense().numpy()
    base = seconds["sentence-transformers float32"]
    print(f"\n## sparse: {len(corpus)} documents, SPLADE of all-MiniLM-L6-v2's shape, max 256 tokens, batch 32")
    print(f"{'':32}{'seconds':>9}{'vs s-t':>9}{'max |diff|':>12}{'same indices':>14}")
    sparse = {}
    for name, s in seconds.items():
        if name.startswith("minibert"):
            rows = dense[name.split()[-1]]
            diff, same, total = 0.0, 0, 0
            for (indices, values), row in zip(rows, want):
                expected = set(np.flatnonzero(row).tolist())
                diff = max(diff, float(np.abs(values - row[indices]).max(initial=0)))
                same += len(expected & set(indices.tolist()))
                total += len(expected | set(indices.tolist()))
            share = same / max(total, 1)
        else:
            diff, share = 0.0, 1.0
        print(f"{name:32}{s:9.3f}{base / s:8.2f}x{diff:12.1e}{share:13.4f}")
        sparse[name] = {"seconds": s, "speedup": base / s, "max_abs_diff": diff, "same_indices": share}
    verdict(base / seconds["minibert float32"])
    out["sparse"] = sparse
    results["rerank"] = out
