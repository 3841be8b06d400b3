"""`minibert serve`'s ASGI application (Starlette): OpenAI's embeddings API, TEI's native routes and the
Cohere/Jina rerank route, over one or more models (serve/models.py). The routes only parse and serialise:
a request's work is its model's Infer's (infer.py), its fields are declared once in api.py (which also
writes /openapi.json from them).

Routes (a request may name its `model`; else the first served model that can answer the route is used):
    POST /v1/embeddings   OpenAI's request and response, as the `openai` client sends and reads them:
                          `input` a string, a list of strings, a list of token ids or a list of such lists;
                          `encoding_format` float or base64 (the client's default); `model` a served
                          embedder (404 if none is served by that name); `dimensions` must be the model's
                          own (400 otherwise: these models were not trained to be truncated, so a shorter
                          vector would be silently worse); `truncate` and `prompt_name` as on /embed;
                          `usage` counts the tokens; errors in OpenAI's error shape.
    POST /embed           TEI's: `inputs`, `normalize` (default true), `truncate`, `truncation_direction`,
                          `prompt_name` (a prompt of the model's sentence-transformers configuration).
    POST /embed_all       TEI's: each input's last-layer token vectors, unpadded.
    POST /similarity      TEI's: the cosine similarity of each of `sentences` with `source_sentence`.
    POST /embed_sparse    TEI's: a SPLADE model's non-zero weights per input, [{"index", "value"}].
    POST /predict         TEI's: a classifier's (or cross-encoder's) labels and scores per input or pair.
    POST /rerank          TEI's: `texts` by a cross-encoder's score for `query`, best first.
    POST /v1/rerank       Cohere's, Jina's and infinity-emb's: `documents` by relevance, `top_n` of them.
    POST /tokenize        TEI's: each input's tokens.      POST /decode   TEI's: token ids back to text.
    GET  /v1/models       the served models.               GET /openapi.json   the request types' schemas.
    GET  /health          200 once every model has run a warm-up forward; 503 while loading or draining.
    GET  /info            what is served (each model's task, dimension, dtype, int8, max length), limits.
    GET  /metrics         Prometheus: requests by route and status, queue depth, batch sizes, latencies.

Scores are the model's own activation (its sentence-transformers CrossEncoder entry, else a sigmoid for one
label; a classifier's softmax, or sigmoid per label when multi-label), or the logits with `raw_scores`.

Every computing route takes only `Content-Type: application/json` (415 otherwise: a browser's simple
request cannot send it without a CORS preflight), reads its body within --max-body-bytes (413, and the
connection closes) and the body time (408) before it asks for a permit (429 beyond
--max-concurrent-requests, or while every model that could answer has --max-queue-seconds of work
queued), and type-checks every field (400). A text longer than the model's limit is truncated unless the
request says `truncate: false` (then 422, naming its index). A client that hangs up is counted as 499.
With an API key, every route but /health needs `Authorization: Bearer KEY`, compared in constant time.
CORS is off unless origins are named.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from minibert.serve import api
from minibert.serve.api import Refused
from minibert.serve.infer import INLINE_BELOW, Admission, input_size
from minibert.serve.limits import Limits
from minibert.serve.models import Model, pick
from minibert.serve.schema import parse


@dataclass
class State:
    models: dict  # name -> Model, in the order given; each loaded at startup in a thread of its own
    limits: Limits
    api_key: str | None = None
    cpu: str = ""
    access_log: bool = True  # one line per request on stderr
    admission: Admission | None = None
    workers: object = None  # the threads that parse, tokenize and serialise large work off the event loop
    metrics: object = None
    ready: bool = False
    draining: bool = False
    in_flight: int = 0  # requests between their first byte and their answer sent, which a drain waits for
    failed: str | None = None
    on_ready: list = field(default_factory=list)  # callbacks once the warm-up forwards have run
    openapi: dict = field(default_factory=dict)


class Metrics:
    """The Prometheus series, in a registry of the app's own."""

    def __init__(self, state: State):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        latency = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
        self.requests = Counter(
            "minibert_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.queue_depth = Gauge("minibert_queue_depth", "Texts waiting for the forward", registry=self.registry)
        self.queue_depth.set_function(lambda: sum(m.infer.queue.depth for m in state.models.values() if m.infer))
        self.batch_texts = Histogram(
            "minibert_batch_texts",
            "Texts per request batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        )
        self.batch_tokens = Histogram(
            "minibert_batch_tokens",
            "Real tokens per request batch",
            registry=self.registry,
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.queue_seconds = Histogram(
            "minibert_queue_seconds", "From arrival to the first forward", registry=self.registry, buckets=latency
        )
        self.tokenize_seconds = Histogram(
            "minibert_tokenize_seconds", "Tokenizing a request", registry=self.registry, buckets=latency
        )
        self.batch_seconds = Histogram(
            "minibert_batch_seconds",
            "Computing one request batch (its micro-batches' forwards and pooling)",
            registry=self.registry,
            buckets=latency,
        )
        self.serialize_seconds = Histogram(
            "minibert_serialize_seconds", "Writing a response body", registry=self.registry, buckets=latency
        )


class Answer(Response):
    """A JSON response whose permit is released, and whose request is logged, once it has been handed to the
    connection: until then an answer counts against the limits."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int = 200, headers: dict | None = None, done=None):
        super().__init__(body, status, headers)
        self.done = done  # called with the status once the answer is sent, or its sending failed

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.done is not None:
                self.done(self.status_code)


# --- what every route does ----------------------------------------------------------------------------------


def route(name: str, openai_errors: bool, tasks: tuple | None = None):
    """A handler wrapped with what every route does: authentication, readiness, for the computing routes (those
    with `tasks`, the tasks of the models that can answer them) the body, read within its limits, then a
    permit, then the body parsed off the event loop; metrics, one access-log line, and errors as one-line
    JSON (OpenAI's shape on /v1, TEI's elsewhere)."""

    def wrap(handler):
        async def endpoint(request: Request):
            state: State = request.app.state.minibert
            start, permit, info = time.perf_counter(), None, {}

            def done(status: int):
                state.in_flight -= 1
                if permit is not None:
                    permit.release()
                if state.metrics is not None:
                    state.metrics.requests.labels(name, str(status)).inc()
                if state.access_log:
                    log_request(request, status, time.perf_counter() - start, info)

            state.in_flight += 1
            try:
                if name != "health":  # a load balancer's probe carries no key
                    authenticate(request, state)
                if tasks is None:
                    status, payload = await handler(request, state)
                    if isinstance(payload, str):  # Prometheus' text format
                        return Answer(payload.encode(), status, {"Content-Type": "text/plain; version=0.0.4"}, done)
                    return Answer(api.json_bytes(payload), status, done=done)
                if state.draining or not state.ready:
                    message = "the server is draining" if state.draining else "the model is loading"
                    raise Refused(503, message, headers={"Retry-After": "1"})
                api.check_content_type(request.headers.get("content-type", ""))
                body = await read_body(request, state.limits)
                permit = state.admission.try_acquire_permit()  # before any work: a refusal costs the read only
                check_room([m for m in state.models.values() if m.task in tasks])
                body = await off_loop(request, state, len(body), api.parse_json, body)
                status, payload = await handler(request, state, body, info)
                return Answer(payload, status, done=done)
            except Refused as e:
                body = (api.openai_error if openai_errors else api.tei_error)(e)
                headers = dict(e.headers)
                if e.status in (408, 413):  # the rest of the body is not read: the connection cannot go on
                    headers["Connection"] = "close"
                return Answer(api.json_bytes(body), e.status, headers, done=done)
            except ClientDisconnect:
                done(499)  # nothing can be sent: counted here
                return Answer(b"", 499)
            except Exception as e:  # a fault of minibert's: one line to the client, the traceback to the log
                import traceback

                traceback.print_exc(file=sys.stderr)
                body = (api.openai_error if openai_errors else api.tei_error)(
                    Refused(500, f"{type(e).__name__}: {str(e)[:200]}")
                )
                return Answer(api.json_bytes(body), 500, done=done)

        return endpoint

    return wrap


def check_room(models: list) -> None:
    """A 429 before the body is parsed when every model that could answer has a full queue (the request's own
    model is checked again once it is known)."""
    refusals = []
    for model in models:
        try:
            model.infer.check_queue()
            return
        except Refused as e:
            refusals.append(e)
    if refusals:
        raise refusals[0]


def log_request(request: Request, status: int, seconds: float, info: dict) -> None:
    """One access-log line: client, method, path, status, milliseconds, and texts and tokens where computed."""
    client = request.client.host if request.client else "-"
    extra = "".join(f" {k}={v}" for k, v in info.items())
    path = request.url.path.encode("ascii", "backslashreplace").decode()[:200]
    print(f"{client} {request.method} {path} {status} {seconds * 1000:.1f}ms{extra}", file=sys.stderr, flush=True)


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body within --max-body-bytes and the body time limit."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"the body is larger than the {limit}-byte limit")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"the body is larger than the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), limits.body_seconds)
    except asyncio.TimeoutError:
        raise Refused(408, f"the body did not arrive within {limits.body_seconds:g} s") from None


async def off_loop(request: Request, state: State, size: int, fn, *args):
    """fn(*args): in place when `size` is under INLINE_BELOW, else in a worker thread, dropped (a 499) if the
    client goes first."""
    if size < INLINE_BELOW:
        return fn(*args)
    return await computed(request, asyncio.get_running_loop().run_in_executor(state.workers, fn, *args))


async def computed(request: Request, work) -> object:
    """The result of `work` (a coroutine), or a 499 if the client goes first: then its work is dropped."""
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        gone.cancel()
        return job.result()
    job.cancel()
    raise ClientDisconnect()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def authenticate(request: Request, state: State) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, key = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), state.api_key.encode()):
        raise Refused(
            401, "a valid API key is needed: Authorization: Bearer KEY", headers={"WWW-Authenticate": "Bearer"}
        )


# --- the routes ----------------------------------------------------------------------------------------------


def chosen(state: State, name: str | None, tasks: tuple, route: str) -> Model:
    """The request's model (serve/models.py: pick), with room in its queue (429 otherwise)."""
    model = pick(state.models, name, tasks, route)
    model.infer.check_queue()
    return model


def options_for(model: Model, prompt_name: str | None = None, **overrides):
    """The engine options of one request: its overrides, and the text of the prompt it names."""
    prompt = None
    if prompt_name is not None:
        if not hasattr(model.loaded, "prompt"):
            raise Refused(400, f"model {model.name!r} has no prompts", "prompt_name")
        try:
            prompt = model.loaded.prompt(prompt_name=prompt_name)
        except ValueError as e:
            raise Refused(400, str(e), "prompt_name") from None
    return model.engine.options(prompt=prompt, **overrides)


async def computed_rows(request: Request, state: State, model: Model, inputs: list, options, output: str, info):
    """Tokenize one request's inputs and compute their rows of `output` on `model`: (rows, tokens)."""
    infer = model.infer
    start = time.perf_counter()
    encodings = await off_loop(request, state, input_size(inputs), infer.tokenize, inputs, options)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    tokens = sum(len(e.ids) for e in encodings)
    info.update(model=model.name, texts=len(encodings), tokens=tokens)
    return await computed(request, infer.compute(encodings, output)), tokens


async def written(request: Request, state: State, model: Model, size: int, fn, *args) -> bytes:
    """An answer's bytes, written off the event loop when large (`size` floats)."""
    start = time.perf_counter()
    payload = await off_loop(request, state, size, fn, *args)
    state.metrics.serialize_seconds.observe(time.perf_counter() - start)
    return payload


EMBED, SPARSE, SCORE, RERANK = ("embed",), ("sparse",), ("classify", "rerank"), ("rerank",)
ANY = ("embed", "rerank", "classify", "sparse")


@route("embeddings", openai_errors=True, tasks=EMBED)
async def embeddings(request: Request, state: State, body, info: dict):
    req = parse(api.EmbeddingsRequest, body, state.limits)
    model = chosen(state, req.model, EMBED, "/v1/embeddings")
    api.check_dimensions(req, model.engine.dim)
    options = options_for(model, req.prompt_name, truncate=req.truncate)
    raw, tokens = await computed_rows(request, state, model, req.input, options, "pooled", info)
    vectors = model.engine.finish(raw, options)
    payload = await written(
        request, state, model, vectors.size, api.embeddings_body, vectors, req.encoding_format, model.name, tokens
    )
    return 200, payload


async def texts_rows(request: Request, state: State, body, kind, tasks: tuple, route: str, output: str, info):
    """A TEI request over texts (api.TextsRequest) parsed, its model chosen, its rows of `output` computed:
    (request, model, rows)."""
    req = parse(kind, body, state.limits)
    model = chosen(state, req.model, tasks, route)
    options = options_for(model, req.prompt_name, truncate=req.truncate, truncation_side=req.truncation_direction)
    rows, _ = await computed_rows(request, state, model, req.inputs, options, output, info)
    return req, model, rows


@route("embed", openai_errors=False, tasks=EMBED)
async def embed(request: Request, state: State, body, info: dict):
    req, model, raw = await texts_rows(request, state, body, api.EmbedRequest, EMBED, "/embed", "pooled", info)
    vectors = model.engine.finish(raw, model.engine.options(normalize=req.normalize))
    return 200, await written(request, state, model, vectors.size, api.vectors_body, vectors)


@route("embed_all", openai_errors=False, tasks=EMBED)
async def embed_all(request: Request, state: State, body, info: dict):
    _, model, rows = await texts_rows(request, state, body, api.EmbedAllRequest, EMBED, "/embed_all", "tokens", info)
    size = sum(r.size for r in rows)
    return 200, await written(request, state, model, size, api.token_vectors_body, rows)


@route("similarity", openai_errors=False, tasks=EMBED)
async def similarity(request: Request, state: State, body, info: dict):
    req = parse(api.SimilarityRequest, body, state.limits)
    model = chosen(state, req.model, EMBED, "/similarity")
    p = req.parameters or api.SimilarityParameters()
    options = options_for(model, p.prompt_name, truncate=p.truncate, truncation_side=p.truncation_direction)
    texts = [req.inputs.source_sentence, *req.inputs.sentences]
    if len(texts) > state.limits.max_request_texts:
        raise Refused(413, f"{len(texts)} texts, more than the {state.limits.max_request_texts} a request may hold")
    raw, _ = await computed_rows(request, state, model, texts, options, "pooled", info)
    vectors = model.engine.finish(raw, model.engine.options(normalize=True))
    scores = vectors[1:] @ vectors[0]  # (sentences,) cosine similarities
    if not np.isfinite(scores).all():
        raise ValueError("the model produced a NaN or an infinite value")
    return 200, api.json_bytes(scores.tolist())


@route("embed_sparse", openai_errors=False, tasks=SPARSE)
async def embed_sparse(request: Request, state: State, body, info: dict):
    kind = api.EmbedSparseRequest
    _, model, rows = await texts_rows(request, state, body, kind, SPARSE, "/embed_sparse", "sparse", info)
    size = sum(len(indices) for indices, _ in rows)
    return 200, await written(request, state, model, size, api.sparse_body, rows)


def scores_of(model: Model, logits: np.ndarray, raw: bool) -> np.ndarray:
    """(N, labels) logits as the model's scores (its activation), or as they are with `raw`."""
    if raw:
        return logits
    import torch

    return model.loaded.scores(torch.from_numpy(logits)).numpy()


@route("predict", openai_errors=False, tasks=SCORE)
async def predict(request: Request, state: State, body, info: dict):
    req = parse(api.PredictRequest, body, state.limits)
    model = chosen(state, req.model, SCORE, "/predict")
    options = model.engine.options(truncate=req.truncate)
    logits, _ = await computed_rows(request, state, model, req.inputs, options, "logits", info)
    single = not (isinstance(body["inputs"], list) and body["inputs"] and isinstance(body["inputs"][0], list))
    scores = scores_of(model, logits, req.raw_scores)
    return 200, api.predictions_body(scores, model.loaded.labels, single)


async def rerank_scores(request, state, model: Model, query: str, texts: list, truncate: bool, raw: bool, info):
    """Each text's score for `query` as a (query, text) pair: (scores (N,), tokens)."""
    options = model.engine.options(truncate=truncate)
    logits, tokens = await computed_rows(request, state, model, [(query, t) for t in texts], options, "logits", info)
    return scores_of(model, logits, raw)[:, 0], tokens


@route("rerank", openai_errors=False, tasks=RERANK)
async def rerank(request: Request, state: State, body, info: dict):
    req = parse(api.RerankRequest, body, state.limits)
    model = chosen(state, req.model, RERANK, "/rerank")
    scores, _ = await rerank_scores(request, state, model, req.query, req.texts, req.truncate, req.raw_scores, info)
    return 200, api.rerank_body(scores, req.texts, req.return_text)


@route("v1_rerank", openai_errors=True, tasks=RERANK)
async def v1_rerank(request: Request, state: State, body, info: dict):
    req = parse(api.CohereRerankRequest, body, state.limits)
    model = chosen(state, req.model, RERANK, "/v1/rerank")
    scores, tokens = await rerank_scores(request, state, model, req.query, req.documents, True, False, info)
    return 200, api.cohere_rerank_body(scores, req.documents, req, model.name, tokens)


def tokens_of(engine, inputs: list, options, add_special_tokens: bool) -> bytes:
    tokenizer = engine.tokenizer
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    out = []
    for e in tokenizer.encode([options.prompt + t for t in inputs], max_length=options.max_length):
        out.append(
            [
                {
                    "id": i,
                    "text": t,
                    "special": i in specials,
                    "start": a if i not in specials else None,
                    "stop": b if i not in specials else None,
                }
                for i, t, (a, b) in zip(e.ids, e.tokens, e.offsets)
                if add_special_tokens or i not in specials
            ]
        )
    return api.json_bytes(out)


@route("tokenize", openai_errors=False, tasks=ANY)
async def tokenize_route(request: Request, state: State, body, info: dict):
    req = parse(api.TokenizeRequest, body, state.limits)
    model = pick(state.models, req.model, ANY, "/tokenize")
    options = options_for(model, req.prompt_name)
    work = (tokens_of, model.engine, req.inputs, options, req.add_special_tokens)
    try:
        return 200, await off_loop(request, state, input_size(req.inputs), *work)
    except ValueError as e:
        raise Refused(400, str(e), "inputs") from None


@route("decode", openai_errors=False, tasks=ANY)
async def decode(request: Request, state: State, body, info: dict):
    req = parse(api.DecodeRequest, body, state.limits)
    model = pick(state.models, req.model, ANY, "/decode")
    vocab = model.engine.config.vocab_size
    for row in req.ids:
        bad = next((t for t in row if t >= vocab), None)
        if bad is not None:
            raise Refused(400, f"token id {bad} is outside the vocabulary [0, {vocab})", "ids")
    tokenizer = model.engine.tokenizer
    return 200, api.json_bytes([tokenizer.decode(row, req.skip_special_tokens) for row in req.ids])


@route("models", openai_errors=True)
async def models(request: Request, state: State):
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "minibert"} for name in state.models]
    return 200, {"object": "list", "data": data}


@route("health", openai_errors=False)
async def health(request: Request, state: State):
    if state.failed:
        return 503, {"status": "failed", "error": state.failed}
    status = "draining" if state.draining else "ready" if state.ready else "loading"
    return (200 if status == "ready" else 503), {"status": status}


@route("info", openai_errors=False)
async def info(request: Request, state: State):
    import minibert

    limits = state.limits
    first = next(iter(state.models.values()))
    return 200, {
        "model_id": first.name,
        "version": minibert.__version__,
        "ready": state.ready,
        "cpu": state.cpu,
        **first.served,
        "models": [{"id": m.name, **m.served} for m in state.models.values()],
        **{k: getattr(limits, k) for k in limits.__dataclass_fields__},
    }


@route("metrics", openai_errors=False)
async def metrics(request: Request, state: State):
    from prometheus_client import generate_latest

    return 200, generate_latest(state.metrics.registry).decode()


@route("openapi", openai_errors=False)
async def openapi_route(request: Request, state: State):
    return 200, state.openapi


# --- the application -----------------------------------------------------------------------------------------

# (path, method, handler, summary, request type): the routes, and the OpenAPI document written from them
ROUTES = [
    ("/v1/embeddings", "POST", embeddings, "OpenAI's embeddings", api.EmbeddingsRequest),
    ("/embeddings", "POST", embeddings, "OpenAI's embeddings (without /v1)", api.EmbeddingsRequest),
    ("/embed", "POST", embed, "sentence vectors (TEI)", api.EmbedRequest),
    ("/embed_all", "POST", embed_all, "each input's token vectors (TEI)", api.EmbedAllRequest),
    ("/similarity", "POST", similarity, "cosine similarities with a source sentence (TEI)", api.SimilarityRequest),
    ("/embed_sparse", "POST", embed_sparse, "SPLADE weights (TEI)", api.EmbedSparseRequest),
    ("/predict", "POST", predict, "labels and scores (TEI)", api.PredictRequest),
    ("/rerank", "POST", rerank, "texts ranked for a query (TEI)", api.RerankRequest),
    ("/v1/rerank", "POST", v1_rerank, "documents ranked for a query (Cohere, Jina)", api.CohereRerankRequest),
    ("/tokenize", "POST", tokenize_route, "each input's tokens (TEI)", api.TokenizeRequest),
    ("/decode", "POST", decode, "token ids back to text (TEI)", api.DecodeRequest),
    ("/v1/models", "GET", models, "the served models", None),
    ("/health", "GET", health, "200 when ready", None),
    ("/info", "GET", info, "what is served, and the limits", None),
    ("/metrics", "GET", metrics, "Prometheus metrics", None),
    ("/openapi.json", "GET", openapi_route, "this document", None),
]


def create_app(state: State, cors_origins: list[str] | None = None) -> Starlette:
    """The ASGI app. At startup it loads each model off the event loop in a thread of its own, runs warm-up
    forwards, and only then reports ready (/health 200) and calls `state.on_ready`."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import asynccontextmanager

    import minibert
    from minibert.serve.schema import openapi

    state.openapi = openapi(
        "minibert serve", minibert.__version__, [(path, method, doc, req) for path, method, _, doc, req in ROUTES]
    )
    state.admission = Admission(state.limits)
    state.workers = ThreadPoolExecutor(2, thread_name_prefix="minibert-io")

    @asynccontextmanager
    async def lifespan(app):
        state.metrics = Metrics(state)
        loading = asyncio.ensure_future(_load(state))
        try:
            yield
        finally:
            loading.cancel()
            for model in state.models.values():
                if model.infer is not None:
                    await model.infer.stop()
            state.workers.shutdown(wait=False, cancel_futures=True)

    routes = [Route(path, handler, methods=[method]) for path, method, handler, _, _ in ROUTES]
    middleware = []
    if cors_origins:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.minibert = state
    return app


async def _load(state: State) -> None:
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    try:
        for model in state.models.values():
            # the thread that loads a model runs its every forward (serve/queue.py says why)
            model.thread = ThreadPoolExecutor(1, thread_name_prefix=f"minibert-model-{model.name}"[:40])
            model.loaded = await loop.run_in_executor(model.thread, model.load)
            model.start(state.limits, state.metrics)
            options = model.engine.options()
            for inputs in model.warm_up_inputs():
                await model.infer.compute(model.infer.tokenize(inputs, options), model.output())
    except Exception as e:  # reported by /health and by the command, which then exits
        state.failed = f"{type(e).__name__}: {e}"
        for callback in state.on_ready:
            callback(state)
        return
    state.ready = True
    for callback in state.on_ready:
        callback(state)


async def drain(state: State) -> None:
    """After SIGTERM or SIGINT: refuse new work (503), and wait until what is in flight is done or the drain
    time is up; then whatever is still waiting is answered 503 (Infer.stop)."""
    state.draining = True
    deadline = time.monotonic() + state.limits.drain_seconds
    while state.in_flight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for model in state.models.values():
        if model.infer is not None:
            await model.infer.queue.stop()
