"""`minibert serve`'s ASGI application (Starlette): OpenAI's embeddings API and TEI's native one. The routes
only parse and serialise: a request's work is Infer's (infer.py), its fields api.py's.

Routes:
    POST /v1/embeddings   OpenAI's request and response, as the `openai` client sends and reads them:
                          `input` a string, a list of strings, a list of token ids or a list of such lists;
                          `encoding_format` float or base64 (the client's default); `model` must be the
                          served name (404 otherwise); `dimensions` must be the model's own (400 otherwise:
                          these models were not trained to be truncated, so a shorter vector would be
                          silently worse); `truncate` as on /embed; `usage` counts the tokens; errors in
                          OpenAI's error shape.
    POST /embed           TEI's: `inputs`, `normalize` (default true), `truncate`, `truncation_direction`.
    GET  /v1/models       the served model.          POST /tokenize   TEI's: each input's wordpieces.
    GET  /health          200 once a warm-up forward has run; 503 while loading or draining.
    GET  /info            what is served (model, dimension, dtype, int8, max length), limits, version, CPU.
    GET  /metrics         Prometheus: requests by route and status, queue depth, batch sizes, latencies.

Every computing route takes only `Content-Type: application/json` (415 otherwise: a browser's simple
request cannot send it without a CORS preflight), reads its body within --max-body-bytes (413, and the
connection closes) and the body time (408) before it asks for a permit (429 beyond
--max-concurrent-requests or --max-queue-seconds), and type-checks every field (400). A text longer
than the model's limit is truncated unless the request says `truncate: false` (then 422, naming its
index). A client that hangs up is counted as 499. With an API key, every route but /health needs
`Authorization: Bearer KEY`, compared in constant time. CORS is off unless origins are named.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from minibert.serve import api
from minibert.serve.api import Refused
from minibert.serve.infer import INLINE_BELOW, Infer, input_size
from minibert.serve.limits import Limits


@dataclass
class State:
    load: object  # () -> Encoder, called once at startup, in the model thread
    model_name: str
    limits: Limits
    api_key: str | None = None
    cpu: str = ""
    access_log: bool = True  # one line per request on stderr
    encoder: object = None
    infer: Infer | None = None
    metrics: object = None
    ready: bool = False
    draining: bool = False
    in_flight: int = 0  # requests between their first byte and their answer sent, which a drain waits for
    failed: str | None = None
    served: dict = field(default_factory=dict)  # what /info and the ready line say is served
    on_ready: list = field(default_factory=list)  # callbacks once the warm-up forward has run


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
        self.queue_depth.set_function(lambda: state.infer.queue.depth if state.infer else 0)
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


COMPUTING = ("embeddings", "embed", "tokenize")


def route(name: str, openai_errors: bool):
    """A handler wrapped with what every route does: authentication, readiness, for the computing routes the
    body (read within its limits, then parsed off the event loop) and a permit, metrics, one access-log
    line, and errors as one-line JSON (OpenAI's shape on /v1, TEI's elsewhere)."""

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
                if name not in COMPUTING:
                    status, payload = await handler(request, state)
                    if isinstance(payload, str):  # Prometheus' text format
                        return Answer(payload.encode(), status, {"Content-Type": "text/plain; version=0.0.4"}, done)
                    return Answer(api.json_bytes(payload), status, done=done)
                if state.draining or not state.ready:
                    message = "the server is draining" if state.draining else "the model is loading"
                    raise Refused(503, message, headers={"Retry-After": "1"})
                api.check_content_type(request.headers.get("content-type", ""))
                body = await read_body(request, state.limits)
                permit = state.infer.try_acquire_permit()  # before any work: a refused request costs its read only
                body = await off_loop(request, state.infer, len(body), api.parse_json, body)
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


async def off_loop(request: Request, infer: Infer, size: int, fn, *args):
    """fn(*args): in place when `size` is under INLINE_BELOW, else in a worker thread, dropped (a 499) if the
    client goes first."""
    if size < INLINE_BELOW:
        return fn(*args)
    return await computed(request, infer.run(fn, *args))


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


async def embed_inputs(request: Request, state: State, inputs: list, options, info: dict):
    """Tokenize, compute and finish one request's inputs: (vectors, tokens)."""
    infer = state.infer
    start = time.perf_counter()
    encodings = await off_loop(request, infer, input_size(inputs), infer.tokenize, inputs, options)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    tokens = sum(len(e.ids) for e in encodings)
    info.update(texts=len(encodings), tokens=tokens)
    return await computed(request, infer.embed(encodings, options)), tokens


@route("embeddings", openai_errors=True)
async def embeddings(request: Request, state: State, body, info: dict):
    req = api.embeddings_request(body, state.limits, state.model_name, state.encoder.dim)
    options = state.encoder.engine.options(truncate=req.truncate)
    vectors, tokens = await embed_inputs(request, state, req.inputs, options, info)
    start = time.perf_counter()
    payload = await off_loop(
        request, state.infer, vectors.size, api.embeddings_body, vectors, req.encoding_format, state.model_name, tokens
    )
    state.metrics.serialize_seconds.observe(time.perf_counter() - start)
    return 200, payload


@route("embed", openai_errors=False)
async def embed(request: Request, state: State, body, info: dict):
    req = api.parse_embed(body, state.limits)
    options = state.encoder.engine.options(
        normalize=req.normalize, truncate=req.truncate, truncation_side=req.truncation_side
    )
    vectors, _ = await embed_inputs(request, state, req.inputs, options, info)
    start = time.perf_counter()
    payload = await off_loop(request, state.infer, vectors.size, api.vectors_body, vectors)
    state.metrics.serialize_seconds.observe(time.perf_counter() - start)
    return 200, payload


def tokens_of(engine, inputs: list) -> bytes:
    tokenizer = engine.tokenizer
    specials = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    out = []
    for e in tokenizer.encode(inputs, max_length=engine.options().max_length):
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
    return api.json_bytes(out)


@route("tokenize", openai_errors=False)
async def tokenize_route(request: Request, state: State, body, info: dict):
    inputs = api.parse_tokenize(body, state.limits)
    try:
        return 200, await off_loop(request, state.infer, input_size(inputs), tokens_of, state.encoder.engine, inputs)
    except ValueError as e:
        raise Refused(400, str(e), "inputs") from None


@route("models", openai_errors=True)
async def models(request: Request, state: State):
    model = {"id": state.model_name, "object": "model", "created": 0, "owned_by": "minibert"}
    return 200, {"object": "list", "data": [model]}


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
    return 200, {
        "model_id": state.model_name,
        "version": minibert.__version__,
        "ready": state.ready,
        "cpu": state.cpu,
        **state.served,
        **{k: getattr(limits, k) for k in limits.__dataclass_fields__},
    }


@route("metrics", openai_errors=False)
async def metrics(request: Request, state: State):
    from prometheus_client import generate_latest

    return 200, generate_latest(state.metrics.registry).decode()


# --- the application -----------------------------------------------------------------------------------------


def served(encoder) -> dict:
    """What is served, for /info and the ready line: the model's dimension, dtype, int8 or not, max length,
    pooling and normalisation."""
    from minibert.fast.quantize import Int8Linear

    model = encoder.model
    options = encoder.engine.options()
    return {
        "dim": encoder.dim,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "int8": any(isinstance(m, Int8Linear) for m in model.modules()),
        "max_input_length": options.max_length,
        "pooling": options.pooling,
        "normalize": options.normalize,
        "device": str(encoder.device),
    }


def create_app(state: State, cors_origins: list[str] | None = None) -> Starlette:
    """The ASGI app. At startup it loads the encoder off the event loop, runs a warm-up forward, and only
    then reports ready (/health 200) and calls `state.on_ready`."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        state.metrics = Metrics(state)
        loading = asyncio.ensure_future(_load(state))
        try:
            yield
        finally:
            loading.cancel()
            if state.infer is not None:
                await state.infer.stop()

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
        state.served = served(state.encoder)
        state.infer = Infer(state.encoder.engine, state.limits, thread, state.metrics)
        state.infer.start()
        warm = state.encoder.engine.options()
        # two warm-up request batches, one short and one of 1,000 tokens, give the queue's cost model
        # (minibert/serve/queue.py) a first measure of both a batch's overhead and its cost per token
        for texts in (["A warm-up text."], ["A warm-up text for a batch of a thousand tokens."] * 77):
            await state.infer.embed(state.infer.tokenize(texts, warm), warm)
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
    if state.infer is not None:
        await state.infer.queue.stop()
