"""The server's request and response types, as plain functions over parsed JSON: what each route accepts
(every field type-checked, unknown fields refused), and the bytes it answers with. HTTP-free, so that
`minibert serve`'s routes and the Ray Serve deployment parse and answer through the same code.

Errors are `Refused(status, message, param)`, one line, quoting at most 40 characters of what was sent."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from minibert.serve.limits import Limits


class Refused(Exception):
    """A request refused with an HTTP status and a one-line message (`param` names the field at fault)."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers or {}


def short(value) -> str:
    """At most 40 characters of what a client sent, for an error message."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def check_content_type(header: str) -> None:
    """Only JSON is computed (415 otherwise): a browser's simple request cannot send it without a CORS preflight."""
    kind = header.split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refused(415, f"the body must be application/json, got Content-Type {short(kind or 'none')}")


def parse_json(body: bytes):
    """A body's JSON; malformed, non-UTF-8, too deeply nested or oversized numbers are a 400 in one line."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise Refused(400, f"the body is not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise Refused(400, "the body's JSON is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise Refused(400, f"the body is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise Refused(400, "the body's JSON holds a number with too many digits") from None


@dataclass(frozen=True)
class EmbeddingsRequest:
    """OpenAI's POST /v1/embeddings; `truncate` (default true) is the one field of minibert's own."""

    inputs: list
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None
    truncate: bool = True


@dataclass(frozen=True)
class EmbedRequest:
    """text-embeddings-inference's POST /embed."""

    inputs: list
    normalize: bool = True
    truncate: bool = True
    truncation_side: str = "right"


def _object(body, required: str, allowed: set) -> dict:
    if not isinstance(body, dict):
        raise Refused(400, f"the body must be a JSON object with {required}, got {type(body).__name__}")
    if required not in body:
        raise Refused(400, f"{required} is missing", required)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Refused(
            400, f"unknown field {short(unknown[0])}; this route takes {', '.join(sorted(allowed))}", unknown[0]
        )
    return body


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise Refused(400, f"{name} must be true or false, got {short(value)}", name)
    return value


def parse_embeddings(body, limits: Limits) -> EmbeddingsRequest:
    body = _object(body, "input", {"input", "model", "encoding_format", "dimensions", "user", "truncate"})
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise Refused(400, f"model must be a string, got {short(model)}", "model")
    fmt = body.get("encoding_format")
    fmt = "float" if fmt is None else fmt
    if not isinstance(fmt, str) or fmt not in ("float", "base64"):
        raise Refused(400, f"encoding_format must be float or base64, got {short(fmt)}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)):
        raise Refused(400, f"dimensions must be an integer, got {short(dimensions)}", "dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise Refused(400, f"user must be a string, got {short(user)}", "user")
    inputs = check_inputs(body["input"], limits, "input")
    return EmbeddingsRequest(inputs, model, fmt, dimensions, _bool(body, "truncate", True))


def embeddings_request(body, limits: Limits, served_name: str, dim: int) -> EmbeddingsRequest:
    """An embeddings request this server can answer: parsed, its model the served one (404 otherwise) and its
    dimensions the model's own (400 otherwise: these models were not trained to be truncated)."""
    req = parse_embeddings(body, limits)
    if req.model is not None and req.model != served_name:
        raise Refused(404, f"model {short(req.model)} is not served here; this server serves {served_name!r}", "model")
    if req.dimensions is not None and req.dimensions != dim:
        raise Refused(
            400,
            f"dimensions must be this model's own {dim}, got {short(req.dimensions)}: its vectors were not "
            "trained to be truncated",
            "dimensions",
        )
    return req


def parse_embed(body, limits: Limits) -> EmbedRequest:
    body = _object(body, "inputs", {"inputs", "normalize", "truncate", "truncation_direction"})
    side = body.get("truncation_direction", "right")
    if not isinstance(side, str) or side.lower() not in ("right", "left"):
        raise Refused(400, f"truncation_direction must be Right or Left, got {short(side)}", "truncation_direction")
    inputs = check_inputs(body["inputs"], limits, "inputs")
    return EmbedRequest(inputs, _bool(body, "normalize", True), _bool(body, "truncate", True), side.lower())


def parse_tokenize(body, limits: Limits) -> list[str]:
    body = _object(body, "inputs", {"inputs"})
    inputs = check_inputs(body["inputs"], limits, "inputs")
    if not all(isinstance(x, str) for x in inputs):
        raise Refused(400, "inputs must be strings to tokenize", "inputs")
    return inputs


def check_inputs(value, limits: Limits, name: str) -> list:
    """A string, a list of strings, a list of token ids, or a list of token-id lists -> a list of inputs."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return [value]  # one text as token ids
    if not isinstance(value, list) or not value:
        raise Refused(400, f"{name} must be a string, a list of strings or token ids, got {short(value)}", name)
    if len(value) > limits.max_request_texts:
        raise Refused(413, f"{len(value)} inputs, more than the {limits.max_request_texts} a request may hold", name)
    for i, x in enumerate(value):
        ids = isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        if not (isinstance(x, str) or (ids and x)):
            raise Refused(400, f"{name}[{i}] must be a string or a non-empty list of token ids, got {short(x)}", name)
    return value


# --- answers ---------------------------------------------------------------------------------------------


def embeddings_body(vectors, encoding_format: str, model: str, tokens: int) -> bytes:
    """OpenAI's embeddings response, as the `openai` client reads it."""
    if encoding_format == "base64":
        data = [b'"' + base64.b64encode(v.astype("<f4").tobytes()) + b'"' for v in vectors]
    else:
        data = vector_rows(vectors)
    items = b",".join(b'{"object":"embedding","index":%d,"embedding":%s}' % (i, d) for i, d in enumerate(data))
    usage = json_bytes({"prompt_tokens": tokens, "total_tokens": tokens})
    return b'{"object":"list","data":[%s],"model":%s,"usage":%s}' % (items, json_bytes(model), usage)


def vectors_body(vectors) -> bytes:
    """(n, dim) vectors as a JSON array of arrays (TEI's /embed answer)."""
    return b"[" + b",".join(vector_rows(vectors)) + b"]"


def vector_rows(vectors) -> list[bytes]:
    """Each row as a JSON array of its floats (as Python writes them, so a client reads back the same values).
    Row by row: the server's event loop runs between rows, where one json.dumps of 2,048 vectors held
    Python's GIL for 0.49 s (measured)."""
    if not np.isfinite(vectors).all():
        raise ValueError("the model produced a NaN or an infinite value")
    return [json.dumps(row.tolist(), separators=(",", ":")).encode() for row in vectors]


def json_bytes(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def openai_error(e: Refused) -> dict:
    code = {404: "model_not_found", 429: "rate_limit_exceeded"}.get(e.status)
    return {"error": {"message": str(e), "type": error_type(e.status), "param": e.param, "code": code}}


def tei_error(e: Refused) -> dict:
    return {"error": str(e), "error_type": error_type(e.status)}


def error_type(status: int) -> str:
    kinds = {401: "authentication_error", 429: "rate_limit_error", 503: "server_error"}
    return kinds.get(status, "invalid_request_error" if status < 500 else "server_error")
