"""Sentence embeddings on Ray Data, for corpora one machine is too slow for (the `ray` extra).

`MinibertEmbedder` is a callable class for `Dataset.map_batches`, as in Ray's batch-inference recipe:
each actor loads one Encoder, and every batch of rows gets an `embedding` column:

    import ray
    from minibert.corpus.ray import MinibertEmbedder

    ds = ray.data.read_parquet("s3://bucket/corpus/")          # or read_text / read_json
    ds = ds.map_batches(MinibertEmbedder, fn_constructor_kwargs={"text_column": "text"},
                        concurrency=8, batch_size=256)
    ds.write_parquet("s3://bucket/vectors/")

In float32 the vectors equal Encoder.encode's within 1e-6 (bfloat16 and int8 vectors depend a little on their
batch); the other columns pass through untouched, so ids stay
beside their vectors. This module imports neither ray nor anything ray needs: Ray drives it.
scripts/embed_ray.py runs the recipe from the command line.
"""

from __future__ import annotations

import numpy as np


class MinibertEmbedder:
    """One Encoder per Ray actor. Batches are dicts of columns (Ray's default numpy batch format) or
    pandas DataFrames; the result is the same batch with `output_column` added, float32 (rows, dim)."""

    def __init__(
        self,
        model=None,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        quantize: str | None = None,
        threads: int | None = None,
    ):
        import torch

        from minibert.encoder import Encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = Encoder.from_pretrained(model, quantize=quantize)
        self.text_column, self.output_column = text_column, output_column
        self.options = {"pooling": pooling, "normalize": normalize, "max_length": max_length, "batch_size": batch_size}

    def __call__(self, batch):
        if self.text_column not in batch:
            columns = list(batch.keys()) if isinstance(batch, dict) else list(batch.columns)
            raise KeyError(
                f"no column {self.text_column!r} in the batch (columns: {', '.join(map(str, columns))}); "
                "pass fn_constructor_kwargs={'text_column': ...}"
            )
        texts = batch[self.text_column]
        texts = [t if isinstance(t, str) else str(t) for t in (texts.tolist() if hasattr(texts, "tolist") else texts)]
        vectors = self.encoder.encode(texts, **self.options) if texts else np.empty((0, self.encoder.dim), np.float32)
        if isinstance(batch, dict):
            return {**batch, self.output_column: vectors}
        batch = batch.copy()
        batch[self.output_column] = list(vectors)
        return batch
