"""`minibert serve`'s ASGI application (Starlette): OpenAI's embeddings API and TEI's native one, over one
Batcher, with limits that hold under overload.

Routes:
    POST /v1/embeddings   OpenAI's request and response, as the `openai` client sends and reads them:
                          `input` a string, a list of strings, a list of token ids or a list of such lists;
                          `encoding_format` float or base64 (the client's default); `model` must be the
                          served name (404 otherwise); `dimensions` must be the model's own (400 otherwise:
                          these models were not trained to be truncated, so a shorter vector would be
                          silently worse); `usage` counts the tokens; errors in OpenAI's error shape.
    POST /embed           TEI's: `inputs`, `normalize` (default true), `truncate`, `truncation_direction`.
    GET  /v1/models       the served model.          POST /tokenize   TEI's: each input's wordpieces.
    GET  /health          200 once a warm-up forward has run; 503 while loading or draining.
    GET  /info            model, dimension, max tokens, limits, version, CPU path.
    GET  /metrics         Prometheus: requests by route and status, queue depth, batch sizes, latencies.

A text longer than the model's limit is truncated unless the request says `truncate: false` (then 422,
naming its index). Token ids are the model's own wordpiece ids; [CLS] and [SEP] are added around them.
Limits: a request is admitted only while the work already queued would take under `max_queue_seconds`
(at the speed of recent forwards), and at most `max_concurrent_requests` at once (429 with Retry-After
beyond either), so that an accepted request keeps its latency under overload;
`max_request_texts` texts per request and `max_body_bytes` per body (413), `request_seconds` to send a
body (408). With an API key, every route but /health needs `Authorization: Bearer KEY`, compared in
constant time. CORS is off unless origins are named. Error messages quote at most 40 characters of input.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from minibert.serve.batcher import Batcher


class Refused(Exception):
    """A request refused with an HTTP status and a one-line message (`param` names the field at fault)."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers or {}


@dataclass
class Limits:
    max_batch_tokens: int = 16384
    max_concurrent_requests: int = 512
    max_queue_seconds: float = 1.0  # admitted only while the queued work would take less than this
    max_request_texts: int = 2048
    max_body_bytes: int = 8 << 20
    request_seconds: float = 30.0  # to send a whole body
    drain_seconds: float = 30.0  # after SIGTERM, to finish what is in flight


@dataclass
class State:
    load: object  # () -> Encoder, called once at startup, off the event loop
    model_name: str
    limits: Limits
    api_key: str | None = None
    cpu: str = ""
    encoder: object = None
    batcher: Batcher | None = None
    metrics: object = None
    ready: bool = False
    draining: bool = False
    failed: str | None = None
    admitted: int = 0
    loop: object = None
    on_ready: list = field(default_factory=list)  # callbacks once the warm-up forward has run


def short(value) -> str:
    """At most 40 characters of what a client sent, for an error message."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


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
        self.queue_depth.set_function(lambda: state.batcher.depth if state.batcher else 0)
        self.batch_texts = Histogram(
            "minibert_batch_texts",
            "Texts per forward",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
        )
        self.batch_tokens = Histogram(
            "minibert_batch_tokens",
            "Real tokens per forward",
            registry=self.registry,
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
        )
        self.queue_seconds = Histogram(
            "minibert_queue_seconds", "From arrival to the first forward", registry=self.registry, buckets=latency
        )
        self.tokenize_seconds = Histogram(
            "minibert_tokenize_seconds", "Tokenizing a request", registry=self.registry, buckets=latency
        )
        self.forward_seconds = Histogram(
            "minibert_forward_seconds", "One forward (a batch)", registry=self.registry, buckets=latency
        )
        self.serialize_seconds = Histogram(
            "minibert_serialize_seconds", "Writing a response", registry=self.registry, buckets=latency
        )


# --- requests ------------------------------------------------------------------------------------------------


async def read_json(request: Request, state: State):
    """The request's JSON body, within the size and time limits; malformed, non-UTF-8 or deeply nested
    bodies are a 400 in one line."""
    limit = state.limits.max_body_bytes
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
        body = await asyncio.wait_for(read(), state.limits.request_seconds)
    except asyncio.TimeoutError:
        raise Refused(408, f"the body did not arrive within {state.limits.request_seconds:g} s") from None
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Refused(400, f"the body is not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise Refused(400, "the body's JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise Refused(400, f"the body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


class Tokens:
    """Token ids that did not come from the tokenizer in one piece (given ids, or truncated on the left)."""

    __slots__ = ("ids", "type_ids")

    def __init__(self, ids):
        self.ids, self.type_ids = ids, [0] * len(ids)


def tokenize(state: State, inputs: list, truncate: bool, direction: str = "right") -> list:
    """Each input (a string, or a list of token ids) as model input within the model's length."""
    encoder = state.encoder
    tokenizer = encoder.tokenizer
    limit = encoder.options()[2]
    strings = [i for i, x in enumerate(inputs) if isinstance(x, str)]
    out = [None] * len(inputs)
    if strings:
        whole = direction == "left" or not truncate  # cut below, by the rule for the direction asked
        encodings, _ = encoder.tokenize([inputs[i] for i in strings], limit, truncation=not whole)
        for i, e in zip(strings, encodings):
            out[i] = e
    vocab = encoder.config.vocab_size
    for i, x in enumerate(inputs):
        if out[i] is None:  # token ids: the model's wordpieces, between [CLS] and [SEP]
            bad = next((t for t in x if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab), None)
            if bad is not None:
                raise Refused(
                    400, f"input {i} holds token id {short(bad)}, outside the vocabulary [0, {vocab})", "input"
                )
            out[i] = Tokens([tokenizer.cls_token_id, *x, tokenizer.sep_token_id])
    for i, e in enumerate(out):
        overflowing = len(e.ids) > limit or bool(getattr(e, "overflowing", None))
        if overflowing and not truncate:
            raise Refused(422, f"input {i} is longer than the model's {limit} tokens, and truncate is false", "input")
        if len(e.ids) > limit:
            kept = e.ids[len(e.ids) - limit + 1 : -1] if direction == "left" else e.ids[1 : limit - 1]
            out[i] = Tokens([e.ids[0], *kept, e.ids[-1]])
    return out


def check_inputs(value, state: State, name: str) -> list:
    """A string, a list of strings, a list of token ids, or a list of token-id lists -> a list of inputs."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return [value]  # one text as token ids
    if not isinstance(value, list) or not value:
        raise Refused(400, f"{name} must be a string, a list of strings or token ids, got {short(value)}", name)
    for i, x in enumerate(value):
        ids = isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        if not (isinstance(x, str) or (ids and x)):
            raise Refused(400, f"{name}[{i}] must be a string or a non-empty list of token ids, got {short(x)}", name)
    if len(value) > state.limits.max_request_texts:
        raise Refused(
            413, f"{len(value)} inputs, more than the {state.limits.max_request_texts} a request may hold", name
        )
    return value


async def compute(request: Request, state: State, encodings: list) -> np.ndarray:
    """The raw vectors of one request's inputs, from the batcher; dropped if the client goes first."""
    job = asyncio.ensure_future(state.batcher.submit(encodings))
    gone = asyncio.ensure_future(_disconnect(request))
    await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
    if job.done():
        gone.cancel()
        return job.result()
    job.cancel()
    raise Refused(499, "the client went away")


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# --- the routes ----------------------------------------------------------------------------------------------


def route(name: str, openai_errors: bool):
    """A handler wrapped with what every route does: authentication, readiness, admission, metrics, and
    errors as one-line JSON (OpenAI's shape on /v1, TEI's elsewhere)."""

    def wrap(handler):
        async def endpoint(request: Request):
            state: State = request.app.state.minibert
            status = 500
            try:
                if name != "health":  # a load balancer's probe carries no key
                    authenticate(request, state)
                if name in ("embeddings", "embed", "tokenize"):
                    if state.draining or not state.ready:
                        raise Refused(
                            503,
                            "the server is draining" if state.draining else "the model is loading",
                            headers={"Retry-After": "1"},
                        )
                    if state.admitted >= state.limits.max_concurrent_requests:
                        raise Refused(
                            429,
                            f"{state.admitted} requests in progress, the most this server takes",
                            headers={"Retry-After": "1"},
                        )
                    state.admitted += 1
                    try:
                        response = await handler(request, state)
                    finally:
                        state.admitted -= 1
                else:
                    response = await handler(request, state)
                status = response.status_code
                return response
            except Refused as e:
                status = e.status
                return error(e, openai_errors)
            except Exception as e:  # a fault of minibert's: still one line, never a traceback to the client
                return error(Refused(500, f"{type(e).__name__}: {str(e)[:200]}"), openai_errors)
            finally:
                if state.metrics is not None:
                    state.metrics.requests.labels(name, str(status)).inc()

        return endpoint

    return wrap


def error(e: Refused, openai: bool) -> Response:
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "invalid_request_error",
        429: "rate_limit_error",
        503: "server_error",
    }.get(e.status, "invalid_request_error" if e.status < 500 else "server_error")
    if openai:
        code = {404: "model_not_found", 429: "rate_limit_exceeded"}.get(e.status)
        body = {"error": {"message": str(e), "type": kind, "param": e.param, "code": code}}
    else:
        body = {"error": str(e), "error_type": kind}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


def authenticate(request: Request, state: State) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, key = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), state.api_key.encode()):
        raise Refused(
            401, "a valid API key is needed: Authorization: Bearer KEY", headers={"WWW-Authenticate": "Bearer"}
        )


@route("embeddings", openai_errors=True)
async def embeddings(request: Request, state: State) -> Response:
    body = await read_json(request, state)
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    if "input" not in body:
        raise Refused(400, "input is missing", "input")
    model = body.get("model", state.model_name)
    if model != state.model_name:
        raise Refused(404, f"model {short(model)} is not served here; this server serves {state.model_name!r}", "model")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise Refused(400, f"encoding_format must be float or base64, got {short(fmt)}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != state.encoder.dim:
        raise Refused(
            400,
            f"dimensions must be this model's own {state.encoder.dim}, got {short(dimensions)}: its "
            "vectors were not trained to be truncated",
            "dimensions",
        )
    inputs = check_inputs(body["input"], state, "input")
    start = time.perf_counter()
    encodings = tokenize(state, inputs, truncate=True)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    vectors = await compute(request, state, encodings)
    start = time.perf_counter()
    if state.encoder.normalize:
        vectors = unit(vectors)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist(),
        }
        for i, v in enumerate(vectors)
    ]
    tokens = sum(len(e.ids) for e in encodings)
    response = JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    state.metrics.serialize_seconds.observe(time.perf_counter() - start)
    return response


@route("embed", openai_errors=False)
async def embed(request: Request, state: State) -> Response:
    body = await read_json(request, state)
    if not isinstance(body, dict) or "inputs" not in body:
        raise Refused(400, "the body must be a JSON object with inputs", "inputs")
    options = {k: body.get(k, default) for k, default in (("normalize", True), ("truncate", True))}
    for key, value in options.items():
        if not isinstance(value, bool):
            raise Refused(400, f"{key} must be true or false, got {short(value)}", key)
    direction = str(body.get("truncation_direction", "right")).lower()
    if direction not in ("right", "left"):
        raise Refused(
            400, f"truncation_direction must be Right or Left, got {short(direction)}", "truncation_direction"
        )
    inputs = check_inputs(body["inputs"], state, "inputs")
    start = time.perf_counter()
    encodings = tokenize(state, inputs, options["truncate"], direction)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    vectors = await compute(request, state, encodings)
    start = time.perf_counter()
    response = JSONResponse((unit(vectors) if options["normalize"] else vectors).tolist())
    state.metrics.serialize_seconds.observe(time.perf_counter() - start)
    return response


@route("tokenize", openai_errors=False)
async def tokenize_route(request: Request, state: State) -> Response:
    body = await read_json(request, state)
    if not isinstance(body, dict) or "inputs" not in body:
        raise Refused(400, "the body must be a JSON object with inputs", "inputs")
    inputs = check_inputs(body["inputs"], state, "inputs")
    if not all(isinstance(x, str) for x in inputs):
        raise Refused(400, "inputs must be strings to tokenize", "inputs")
    tokenizer = state.encoder.tokenizer
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    out = []
    for e in tokenizer.encode(inputs, max_length=state.encoder.options()[2]):
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
            ]
        )
    return JSONResponse(out)


@route("models", openai_errors=True)
async def models(request: Request, state: State) -> Response:
    return JSONResponse(
        {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": 0, "owned_by": "minibert"}]}
    )


@route("health", openai_errors=False)
async def health(request: Request, state: State) -> Response:
    if state.failed:
        return JSONResponse({"status": "failed", "error": state.failed}, status_code=503)
    status = "draining" if state.draining else "ready" if state.ready else "loading"
    return JSONResponse({"status": status}, status_code=200 if status == "ready" else 503)


@route("info", openai_errors=False)
async def info(request: Request, state: State) -> Response:
    import minibert

    encoder, limits = state.encoder, state.limits
    return JSONResponse(
        {
            "model_id": state.model_name,
            "version": minibert.__version__,
            "ready": state.ready,
            "cpu": state.cpu,
            "dim": encoder.dim if encoder else None,
            "max_input_length": encoder.options()[2] if encoder else None,
            "pooling": encoder.pooling if encoder else None,
            "normalize": encoder.normalize if encoder else None,
            **{k: getattr(limits, k) for k in limits.__dataclass_fields__},
        }
    )


@route("metrics", openai_errors=False)
async def metrics(request: Request, state: State) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# --- the application -----------------------------------------------------------------------------------------


def create_app(state: State, cors_origins: list[str] | None = None) -> Starlette:
    """The ASGI app. At startup it loads the encoder off the event loop, runs a warm-up forward, and only
    then reports ready (/health 200) and calls `state.on_ready`."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        state.loop = asyncio.get_running_loop()
        state.metrics = Metrics(state)
        loading = asyncio.ensure_future(_load(state))
        try:
            yield
        finally:
            loading.cancel()
            if state.batcher is not None:
                await state.batcher.stop()

    routes = [
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
        Route("/embed", embed, methods=["POST"]),
        Route("/tokenize", tokenize_route, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
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
    thread = ThreadPoolExecutor(1, thread_name_prefix="minibert-model")  # loads the model, then runs every forward
    try:
        state.encoder = await loop.run_in_executor(thread, state.load)
        state.batcher = Batcher(state.encoder, state.limits.max_batch_tokens, state.metrics, thread)
        state.batcher.start()
        await state.batcher.submit(tokenize(state, ["A warm-up text for the first forward."], truncate=True))
    except Exception as e:  # reported by /health and by the command, which then exits
        state.failed = f"{type(e).__name__}: {e}"
        for callback in state.on_ready:
            callback(state)
        return
    state.ready = True
    for callback in state.on_ready:
        callback(state)


async def drain(state: State) -> None:
    """After SIGTERM: refuse new work (503), and wait until what is in flight is done or the drain time is up."""
    state.draining = True
    deadline = time.monotonic() + state.limits.drain_seconds
    while state.admitted > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
