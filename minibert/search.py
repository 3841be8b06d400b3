"""Semantic search over vectors: the nearest corpus rows to each query, as sentence-transformers'
`util.semantic_search` gives them, over a numpy array, a torch tensor, or a folder of shards
(`read_vectors`) read a chunk of rows at a time, so that a corpus larger than memory can be searched.
Torch-free."""

from __future__ import annotations

import numpy as np

SCORES = ("cosine", "dot")


def semantic_search(
    query_vectors, corpus, top_k: int = 10, *, score: str = "cosine", chunk_rows: int = 100_000
) -> list[list[dict]]:
    """For each query vector, the `top_k` corpus rows that score highest, best first, as
    [{"corpus_id": row, "score": s}, ...] (sentence-transformers' shape). `score` is "cosine" or "dot".
    `corpus` is read `chunk_rows` rows at a time: memory holds one chunk's scores and the best so far."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    queries = np.atleast_2d(_as_numpy(query_vectors)).astype(np.float32, copy=False)
    rows, dim = _shape(corpus)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries of shape {queries.shape} cannot be scored against a corpus of dimension {dim}")
    if score == "cosine":
        queries = _unit(queries)
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for start in range(0, rows, chunk_rows):
        chunk = _as_numpy(corpus[start : start + chunk_rows]).astype(np.float32, copy=False)
        if score == "cosine":
            chunk = _unit(chunk)
        scores = queries @ chunk.T  # (queries, chunk rows)
        keep = min(top_k, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        if best_scores.shape[1] > top_k:  # the best top_k of what is held
            top = np.argpartition(-best_scores, top_k - 1, axis=1)[:, :top_k]
            best_scores, best_ids = np.take_along_axis(best_scores, top, 1), np.take_along_axis(best_ids, top, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores, best_ids = np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_ids, order, 1)
    return [
        [{"corpus_id": int(i), "score": float(s)} for i, s in zip(ids, scores)]
        for ids, scores in zip(best_ids, best_scores)
    ]


def _unit(x: np.ndarray) -> np.ndarray:
    from minibert.engine.pooling import l2_normalize

    return l2_normalize(np, x)


def _shape(corpus) -> tuple[int, int]:
    shape = tuple(getattr(corpus, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"the corpus must be (rows, dim) vectors, got shape {shape}")
    return int(shape[0]), int(shape[1])


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().float().numpy()
    return np.asarray(x)
