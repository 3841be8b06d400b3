"""`from minibert.ray import MinibertEmbedder`, the import path README.md gives; the class lives in
minibert/corpus/ray.py."""

from minibert.corpus.ray import MinibertEmbedder

__all__ = ["MinibertEmbedder"]
