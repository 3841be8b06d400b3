"""The encoder behind Ray Serve, for more replicas than one machine holds (the `ray` extra, which installs Ray
Serve: pip install 'minibert-encoder[ray]').

`minibert serve` holds no state, so replicas behind any load balancer scale it. On a Ray cluster, Ray
Serve places the replicas and routes to them; `deployment(...)` builds one whose replicas each load an
Encoder, and whose requests Ray Serve's own batching (`@serve.batch`) gathers into one engine call:

    from ray import serve
    from minibert.serve.ray_serve import deployment

    handle = serve.run(deployment().bind(), route_prefix="/v1/embeddings")
    # POST {"input": ["a text", ...]} -> OpenAI's response; or, in Python:
    handle.embed.remote(["a text"]).result()

Over HTTP a replica answers as `minibert serve`'s /v1/embeddings does, through the same code
(minibert/serve/api.py): the same fields, checks, errors, `usage`, `model` and `encoding_format`. The
vectors equal Encoder.encode's within 1e-6 in float32 (a text's vector does not depend on its batch;
int8 vectors do, a little: minibert/fast/quantize.py). Each replica asks Ray for `num_cpus` (1 by
default): `deployment` refuses more replicas than the running cluster has CPUs for, which Ray Serve
would otherwise wait for without a word. This module imports ray only when `deployment` is called.
"""

from __future__ import annotations

import numpy as np

from minibert.serve import api
from minibert.serve.api import Refused
from minibert.serve.limits import Limits


class Embedder:
    """What each replica runs: one Encoder, and a batched embed that Ray Serve feeds."""

    def __init__(self, model=None, served_model_name: str | None = None, limits: Limits | None = None, **options):
        from minibert.encoder import Encoder

        self.encoder = Encoder.from_pretrained(model, **options)
        self.engine = self.encoder.engine
        self.name = served_model_name or (str(model).rstrip("/").rsplit("/", 1)[-1] if model else "all-MiniLM-L6-v2")
        self.limits = limits or Limits()
        self.raw = self.engine.options(
            normalize=False
        )  # Ray Serve's batch is pooled raw; each request finishes its own

    async def _embed_batch(self, requests: list[list]) -> list[np.ndarray]:
        """One engine call for the model inputs of every request in Ray Serve's batch, split back per request."""
        encodings = [e for request in requests for e in request]
        vectors = self.engine.backend.to_numpy(self.engine.embed(encodings, self.raw)) if encodings else None
        out, start = [], 0
        for request in requests:
            out.append(vectors[start : start + len(request)] if request else np.empty((0, self.engine.dim), np.float32))
            start += len(request)
        return out

    async def _vectors(self, inputs: list, options) -> tuple[np.ndarray, int]:
        encodings, _ = self.engine.tokenize(inputs, options)
        raw = await self._batched(encodings)
        return self.engine.finish(raw, options), sum(len(e.ids) for e in encodings)

    async def embed(self, texts) -> np.ndarray:
        """(n, dim) vectors of one request's texts (a string or a list of strings), as Encoder.encode gives."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a string or a list of strings")
        return (await self._vectors(texts, self.engine.options()))[0]

    async def __call__(self, request):
        """HTTP: OpenAI's embeddings request and response, as /v1/embeddings of `minibert serve`."""
        from starlette.responses import Response

        from minibert.engine.core import InputTooLong

        try:
            api.check_content_type(request.headers.get("content-type", ""))
            body = await request.body()
            if len(body) > self.limits.max_body_bytes:
                raise Refused(413, f"the body is larger than the {self.limits.max_body_bytes}-byte limit")
            req = api.embeddings_request(api.parse_json(body), self.limits, self.name, self.engine.dim)
            try:
                prompt = None if req.prompt_name is None else self.encoder.prompt(prompt_name=req.prompt_name)
            except ValueError as e:
                raise Refused(400, str(e), "prompt_name") from None
            options = self.engine.options(truncate=req.truncate, prompt=prompt)
            try:
                vectors, tokens = await self._vectors(req.input, options)
            except InputTooLong as e:
                raise Refused(422, str(e), "input") from None
            except (ValueError, TypeError) as e:
                raise Refused(400, str(e), "input") from None
            payload = api.embeddings_body(vectors, req.encoding_format, self.name, tokens)
            return Response(payload, media_type="application/json")
        except Refused as e:
            return Response(api.json_bytes(api.openai_error(e)), e.status, e.headers, media_type="application/json")


def deployment(
    model=None,
    *,
    max_batch_size: int = 64,
    batch_wait_timeout_s: float = 0.005,
    num_replicas: int = 1,
    ray_actor_options: dict | None = None,
    served_model_name: str | None = None,
    **encoder_options,
):
    """A Ray Serve deployment of Embedder (call `.bind()` on it, then `serve.run`). `encoder_options` go to
    Encoder.from_pretrained (quantize="int8", dtype, ...); Ray Serve batches up to `max_batch_size`
    requests, waiting at most `batch_wait_timeout_s` for more. Where Ray is already running, replicas
    that need more CPUs than its cluster has are refused here, naming both."""
    import ray
    from ray import serve

    actor_options = ray_actor_options or {"num_cpus": 1}
    if ray.is_initialized():
        have = ray.cluster_resources().get("CPU", 0)
        need = num_replicas * actor_options.get("num_cpus", 1)
        if need > have:
            raise ValueError(
                f"{num_replicas} replicas of {actor_options.get('num_cpus', 1)} CPU need {need:g} CPUs, and this Ray "
                f"cluster has {have:g}: Ray Serve would wait for them forever; ask for fewer replicas"
            )

    class MinibertDeployment(Embedder):
        def __init__(self):
            super().__init__(model, served_model_name, **encoder_options)
            self._batched = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
                self._embed_batch
            )

    return serve.deployment(
        MinibertDeployment, name="minibert", num_replicas=num_replicas, ray_actor_options=actor_options
    )
