"""Serving embeddings over HTTP (the `serve` extra: Starlette, h11, prometheus-client): `minibert serve`.

limits.py says what a client may hold; api.py parses requests and writes answers; infer.py admits
requests (permits) and runs their work off the event loop; queue.py gathers the texts of every request
into request batches for the model's thread; http.py is the HTTP/1.1 server with its connection limits;
app.py the routes; run.py the process; ray_serve.py the same /v1/embeddings behind Ray Serve.
"""
