"""Serving embeddings over HTTP (the `serve` extra: Starlette, h11, prometheus-client): `minibert serve`.

batcher.py gathers the texts of every request into one queue and computes them in batches under a token
budget; app.py is the ASGI application (OpenAI's /v1/embeddings, TEI's /embed, /tokenize, /health,
/info, /metrics) with its limits and authentication; ray_serve.py puts the same encoder behind Ray Serve.
"""
