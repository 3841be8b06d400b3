"""Corpora larger than memory and beyond one machine: streamed inputs, shards with a manifest, resume and
read_vectors (shards.py), and Ray Data (ray.py, the `ray` extra)."""
