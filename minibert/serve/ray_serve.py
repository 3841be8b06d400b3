"""The encoder behind Ray Serve, for more replicas than one machine holds (the `ray` extra, with Ray
Serve: pip install 'ray[serve]').

`minibert serve` holds no state, so replicas behind any load balancer scale it. On a Ray cluster, Ray
Serve places the replicas and routes to them; `deployment(...)` builds one whose replicas each load an
Encoder, and whose requests Ray Serve's own batching (`@serve.batch`) gathers into one encode:

    from ray import serve
    from minibert.serve.ray_serve import deployment

    serve.run(deployment(num_replicas=4).bind(), route_prefix="/v1/embeddings")
    # POST {"input": ["a text", ...]} -> OpenAI's response shape; or, in Python:
    handle = serve.get_app_handle("default"); handle.embed.remote(["a text"]).result()

The vectors equal Encoder.encode's (within 1e-6: a text's vector does not depend on its batch).
This module imports ray only when `deployment` is called.
"""

from __future__ import annotations

import numpy as np


class Embedder:
    """What each replica runs: one Encoder, and a batched `embed(texts)` that Ray Serve feeds."""

    def __init__(self, model=None, **encoder_options):
        from minibert.encoder import Encoder

        self.encoder = Encoder.from_pretrained(model, **encoder_options)
        self.name = str(model) if model else "all-MiniLM-L6-v2"

    async def _embed_batch(self, batches: list[list[str]]) -> list[np.ndarray]:
        """One encode for the texts of every request in Ray Serve's batch, split back per request."""
        texts = [t for batch in batches for t in batch]
        vectors = self.encoder.encode(texts) if texts else np.empty((0, self.encoder.dim), np.float32)
        out, start = [], 0
        for batch in batches:
            out.append(vectors[start : start + len(batch)])
            start += len(batch)
        return out

    async def embed(self, texts) -> np.ndarray:
        """(n, dim) vectors of one request's texts (a string or a list of strings)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a string or a list of strings")
        return await self._batched(texts)

    async def __call__(self, request):
        """HTTP: OpenAI's embeddings request ({"input": ...}) and response shape, vectors as floats."""
        from starlette.responses import JSONResponse

        try:
            body = await request.json()
            vectors = await self.embed(body["input"])
        except (ValueError, KeyError, TypeError) as e:
            return JSONResponse(
                {
                    "error": {
                        "message": f"input must be a string or a list of strings ({e})",
                        "type": "invalid_request_error",
                    }
                },
                status_code=400,
            )
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": self.name})


def deployment(
    model=None,
    *,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.005,
    num_replicas=1,
    ray_actor_options: dict | None = None,
    **encoder_options,
):
    """A Ray Serve deployment of Embedder (call `.bind()` on it, then `serve.run`). `encoder_options` go to
    Encoder.from_pretrained (quantize="int8", dtype, ...); Ray Serve batches up to `max_batch_size`
    requests, waiting at most `batch_wait_timeout_s` for more."""
    from ray import serve

    class MinibertDeployment(Embedder):
        def __init__(self):
            super().__init__(model, **encoder_options)
            self._batched = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
                self._embed_batch
            )

    return serve.deployment(
        MinibertDeployment,
        name="minibert",
        num_replicas=num_replicas,
        ray_actor_options=ray_actor_options or {"num_cpus": 1},
    )
