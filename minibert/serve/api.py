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
from minibert.serve.schema import (
    BOOL,
    POSITIVE_INT,
    STRING,
    Kind,
    Refused,
    choice,
    field_of,
    nested,
    optional,
    parse,
    short,
)


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


# --- what the inputs of a request may be -------------------------------------------------------------------


def check_inputs(value, limits: Limits, name: str) -> list:
    """A string, a list of strings, a list of token ids, or a list of token-id lists -> a list of inputs."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return [value]  # one text as token ids
    if not isinstance(value, list) or not value:
        raise Refused(400, f"{name} must be a string, a list of strings or token ids, got {short(value)}", name)
    _check_count(value, limits, name)
    for i, x in enumerate(value):
        ids = isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        if not (isinstance(x, str) or (ids and x)):
            raise Refused(400, f"{name}[{i}] must be a string or a non-empty list of token ids, got {short(x)}", name)
    return value


def _check_count(value: list, limits: Limits, name: str) -> None:
    if len(value) > limits.max_request_texts:
        raise Refused(413, f"{len(value)} inputs, more than the {limits.max_request_texts} a request may hold", name)


def check_texts(value, limits: Limits, name: str, one: bool = True) -> list[str]:
    """A non-empty list of strings (or, where `one`, a string) -> a list of strings."""
    if one and isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        what = "a string or a non-empty list of strings" if one else "a non-empty list of strings"
        raise Refused(400, f"{name} must be {what}, got {short(value)}", name)
    _check_count(value, limits, name)
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise Refused(400, f"{name}[{i}] must be a string, got {short(x)}", name)
    return value


def check_predict_inputs(value, limits: Limits, name: str) -> list:
    """TEI's /predict inputs: a string, a pair [a, b], or a batch of [text] and [a, b] lists -> a list of
    strings and (a, b) tuples."""

    def sequence(x, where):
        if isinstance(x, list) and len(x) in (1, 2) and all(isinstance(t, str) for t in x):
            return x[0] if len(x) == 1 else (x[0], x[1])
        raise Refused(400, f"{where} must be [text] or a pair [text, text] of strings, got {short(x)}", name)

    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise Refused(400, f"{name} must be a string, a pair or a batch of them, got {short(value)}", name)
    if isinstance(value[0], str):  # one input: [text] or a pair
        return [sequence(value, name)]
    _check_count(value, limits, name)
    return [sequence(x, f"{name}[{i}]") for i, x in enumerate(value)]


def check_documents(value, limits: Limits, name: str) -> list[str]:
    """/v1/rerank's documents: a non-empty list of strings or {"text": string} objects -> their texts."""
    if not isinstance(value, list) or not value:
        raise Refused(400, f"{name} must be a non-empty list of documents, got {short(value)}", name)
    _check_count(value, limits, name)
    out = []
    for i, x in enumerate(value):
        if isinstance(x, dict) and set(x) == {"text"}:
            x = x["text"]
        if not isinstance(x, str):
            raise Refused(400, f'{name}[{i}] must be a string or {{"text": string}}, got {short(x)}', name)
        out.append(x)
    return out


def check_ids(value, limits: Limits, name: str) -> list[list[int]]:
    """/decode's ids: a list of token ids, or a list of such lists."""
    if isinstance(value, list) and value and all(isinstance(x, list) for x in value):
        _check_count(value, limits, name)
        rows = value
    else:
        rows = [value]
    for row in rows:
        if not isinstance(row, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in row):
            raise Refused(400, f"{name} must be token ids (integers from 0) or lists of them, got {short(row)}", name)
    return rows


INPUTS_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}, "minItems": 1},
    ]
}
INPUTS = Kind(INPUTS_SCHEMA, lambda value, name, limits: check_inputs(value, limits, name))
TEXTS = Kind(
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    lambda value, name, limits: check_texts(value, limits, name),
)
STRING_LIST = Kind(
    {"type": "array", "items": {"type": "string"}, "minItems": 1},
    lambda value, name, limits: check_texts(value, limits, name, one=False),
)
_SEQUENCE = {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}
PREDICT_INPUTS = Kind(
    {"oneOf": [{"type": "string"}, _SEQUENCE, {"type": "array", "items": _SEQUENCE, "minItems": 1}]},
    lambda value, name, limits: check_predict_inputs(value, limits, name),
)
DOCUMENTS = Kind(
    {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            ]
        },
    },
    lambda value, name, limits: check_documents(value, limits, name),
)
IDS = Kind(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "integer", "minimum": 0}},
            {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}, "minItems": 1},
        ]
    },
    lambda value, name, limits: check_ids(value, limits, name),
)
SIDE = choice("right", "left")
MODEL = field_of(optional(STRING), "the served model to use (default: the first that can answer this route)", None)
PROMPT_NAME = field_of(
    optional(STRING), "a prompt of the model's sentence-transformers configuration, put before each text", None
)
TRUNCATE = field_of(BOOL, "cut an input longer than the model's limit (false: refuse it, 422)", True)
SIDE_FIELD = field_of(SIDE, "which end of a longer input is cut", "right")
RAW_SCORES = field_of(BOOL, "the logits, without the model's activation", False)


# --- the request types: each route's body, declared once (parsed and described from here) -------------------


@dataclass(frozen=True)
class EmbeddingsRequest:
    """OpenAI's POST /v1/embeddings; `truncate` and `prompt_name` are minibert's own."""

    input: list = field_of(INPUTS, "a string, a list of strings, token ids, or a list of token-id lists")
    model: str | None = MODEL
    encoding_format: str = field_of(choice("float", "base64"), "how each vector is written", "float")
    dimensions: int | None = field_of(optional(POSITIVE_INT), "must be the model's own dimension", None)
    user: str | None = field_of(optional(STRING), "ignored", None)
    truncate: bool = TRUNCATE
    prompt_name: str | None = PROMPT_NAME


@dataclass(frozen=True)
class TextsRequest:
    """What TEI's routes over texts share."""

    inputs: list = field_of(INPUTS, "a string, a list of strings, token ids, or a list of token-id lists")
    truncate: bool = TRUNCATE
    truncation_direction: str = SIDE_FIELD
    prompt_name: str | None = PROMPT_NAME
    model: str | None = MODEL


@dataclass(frozen=True)
class EmbedRequest(TextsRequest):
    """text-embeddings-inference's POST /embed."""

    normalize: bool = field_of(BOOL, "scale each vector to unit length", True)


@dataclass(frozen=True)
class EmbedAllRequest(TextsRequest):
    """text-embeddings-inference's POST /embed_all: each input's last-layer token vectors."""


@dataclass(frozen=True)
class EmbedSparseRequest(TextsRequest):
    """text-embeddings-inference's POST /embed_sparse: each input's SPLADE weights, non-zero ones only."""


@dataclass(frozen=True)
class SimilarityInputs:
    """The sentences compared."""

    source_sentence: str = field_of(STRING, "the text the others are compared with")
    sentences: list = field_of(STRING_LIST, "the texts compared with source_sentence")


@dataclass(frozen=True)
class SimilarityParameters:
    """How the sentences are embedded."""

    truncate: bool = TRUNCATE
    truncation_direction: str = SIDE_FIELD
    prompt_name: str | None = PROMPT_NAME


@dataclass(frozen=True)
class SimilarityRequest:
    """text-embeddings-inference's POST /similarity: the cosine similarity of each sentence with the source."""

    inputs: SimilarityInputs = field_of(nested(SimilarityInputs), "the source sentence and the sentences")
    parameters: SimilarityParameters | None = field_of(optional(nested(SimilarityParameters)), "options", None)
    model: str | None = MODEL


@dataclass(frozen=True)
class PredictRequest:
    """text-embeddings-inference's POST /predict: each input's labels and scores, best first."""

    inputs: list = field_of(PREDICT_INPUTS, "a string, a pair [text, text], or a batch of [text] and pairs")
    truncate: bool = TRUNCATE
    raw_scores: bool = RAW_SCORES
    model: str | None = MODEL


@dataclass(frozen=True)
class RerankRequest:
    """text-embeddings-inference's POST /rerank: the texts by their score for the query, best first."""

    query: str = field_of(STRING, "the query")
    texts: list = field_of(STRING_LIST, "the texts to rank")
    truncate: bool = TRUNCATE
    raw_scores: bool = RAW_SCORES
    return_text: bool = field_of(BOOL, "include each text in the answer", False)
    model: str | None = MODEL


@dataclass(frozen=True)
class CohereRerankRequest:
    """POST /v1/rerank, as Cohere, Jina and infinity-emb take it: the documents by relevance, best first."""

    query: str = field_of(STRING, "the query")
    documents: list = field_of(DOCUMENTS, 'strings, or {"text": string} objects')
    model: str | None = MODEL
    top_n: int | None = field_of(optional(POSITIVE_INT), "how many results (default: all)", None)
    return_documents: bool = field_of(BOOL, "include each document's text", False)


@dataclass(frozen=True)
class TokenizeRequest:
    """text-embeddings-inference's POST /tokenize: each input's tokens with their ids and offsets."""

    inputs: list = field_of(TEXTS, "a string or a list of strings")
    add_special_tokens: bool = field_of(BOOL, "include the model's special tokens", True)
    prompt_name: str | None = PROMPT_NAME
    model: str | None = MODEL


@dataclass(frozen=True)
class DecodeRequest:
    """text-embeddings-inference's POST /decode: token ids back to text."""

    ids: list = field_of(IDS, "token ids, or a list of token-id lists")
    skip_special_tokens: bool = field_of(BOOL, "leave the model's special tokens out", True)
    model: str | None = MODEL


def check_dimensions(req: EmbeddingsRequest, dim: int) -> None:
    """An embeddings request's dimensions must be the model's own (400 otherwise: these models were not trained
    to be truncated, so a shorter vector would be silently worse)."""
    if req.dimensions is not None and req.dimensions != dim:
        raise Refused(
            400,
            f"dimensions must be this model's own {dim}, got {short(req.dimensions)}: its vectors were not "
            "trained to be truncated",
            "dimensions",
        )


def embeddings_request(body, limits: Limits, served_name: str, dim: int) -> EmbeddingsRequest:
    """An embeddings request for a one-model server (Ray Serve's): parsed, its model the served one (404
    otherwise), its dimensions the model's own."""
    req = parse(EmbeddingsRequest, body, limits)
    if req.model is not None and req.model != served_name:
        raise Refused(404, f"model {short(req.model)} is not served here; this server serves {served_name!r}", "model")
    check_dimensions(req, dim)
    return req


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


def token_vectors_body(per_input: list) -> bytes:
    """Each input's (tokens, H) vectors as a JSON array of arrays of arrays (TEI's /embed_all answer)."""
    return b"[" + b",".join(b"[" + b",".join(vector_rows(v)) + b"]" for v in per_input) + b"]"


def sparse_body(per_input: list) -> bytes:
    """Each input's (indices, values) as TEI's /embed_sparse answer: [[{"index", "value"}, ...], ...]."""
    rows = []
    for indices, values in per_input:
        if not np.isfinite(values).all():
            raise ValueError("the model produced a NaN or an infinite value")
        rows.append(json_bytes([{"index": i, "value": v} for i, v in zip(indices.tolist(), values.tolist())]))
    return b"[" + b",".join(rows) + b"]"


def ranking(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices by score, best first (ties in input order), the first `top_n`."""
    if not np.isfinite(scores).all():
        raise ValueError("the model produced a NaN or an infinite value")
    return np.argsort(-scores, kind="stable")[:top_n].tolist()


def rerank_body(scores: np.ndarray, texts: list[str], return_text: bool) -> bytes:
    """TEI's /rerank answer: [{"index", "score"(, "text")}], best first."""
    return json_bytes(
        [
            {"index": i, "score": float(scores[i]), **({"text": texts[i]} if return_text else {})}
            for i in ranking(scores)
        ]
    )


def cohere_rerank_body(scores, documents: list[str], req, model: str, tokens: int) -> bytes:
    """/v1/rerank's answer, as Cohere, Jina and infinity-emb give it: results by relevance, best first."""
    results = [
        {
            "index": i,
            "relevance_score": float(scores[i]),
            **({"document": {"text": documents[i]}} if req.return_documents else {}),
        }
        for i in ranking(scores, req.top_n)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_bytes({"object": "rerank", "model": model, "results": results, "usage": usage})


def predictions_body(scores: np.ndarray, labels: list[str], single: bool) -> bytes:
    """TEI's /predict answer: per input, every label with its score, best first; one input alone when the
    request sent one."""
    out = [[{"score": float(row[j]), "label": labels[j]} for j in ranking(row)] for row in scores]
    return json_bytes(out[0] if single else out)


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
