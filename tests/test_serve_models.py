"""`minibert serve` with several models in one process: an embedder with prompts, a cross-encoder, a
classifier and a SPLADE model, each route driven over HTTP against a subprocess server and held to
sentence-transformers and transformers; the request types' OpenAPI schema; and the 4xx a request gets when
it asks the wrong model or sends what a route cannot take."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from checkpoints import small_bert
from serving import Server

from minibert.serve import api
from minibert.serve.schema import object_schema

pytest.importorskip("starlette", reason="the serve extra (starlette, h11, prometheus-client) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (a test dependency) is not installed")

QUERY = "how do rivers shape the towns along them"
DOCUMENTS = [
    "Rivers carry trade and water to the towns built on their banks.",
    "The recipe needs two eggs and a cup of flour.",
    "Many old towns grew where a river could be crossed.",
    "word " * 600,  # longer than the model's 512 tokens: cut, not refused
]
TEXTS = ["A man is eating food.", "短い", "", "The girl is carrying a baby. " * 60]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def folders(minilm_dir, cross_encoder_dir, splade_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    shutil.copytree(minilm_dir, tmp / "prompted")
    st_file = tmp / "prompted" / "config_sentence_transformers.json"
    config = json.loads(st_file.read_text())
    config |= {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
    st_file.write_text(json.dumps(config))
    classifier, _ = small_bert(
        minilm_dir, tmp, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
    )
    return {"minilm": tmp / "prompted", "ce": cross_encoder_dir, "clf": classifier, "splade": splade_dir}


@pytest.fixture(scope="module")
def server(folders):
    args = ["--max-queue-seconds", "60"]
    for name, folder in folders.items():
        args += ["--model", str(folder), "--served-model-name", name]
    s = Server(*args)
    yield s
    s.stop()


def post(server, path, body):
    status, _, reply = server.request(path, body)
    assert status == 200, (path, body, reply)
    return reply


def test_the_ready_line_models_and_info_list_every_model(server):
    ready = [line for line in server.lines if line.startswith("minibert: serving")][0]
    for part in ("minilm (embed: 384 dimensions", "ce (rerank:", "clf (classify: labels negative, neutral, positive"):
        assert part in ready, ready
    assert "splade (sparse: 30522 dimensions" in ready
    assert [m["id"] for m in server.request("/v1/models")[2]["data"]] == ["minilm", "ce", "clf", "splade"]
    info = server.request("/info")[2]
    assert [(m["id"], m["task"]) for m in info["models"]] == [
        ("minilm", "embed"),
        ("ce", "rerank"),
        ("clf", "classify"),
        ("splade", "sparse"),
    ]


def test_rerank_routes_give_sentence_transformers_scores(server, folders):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(folders["ce"]), device="cpu")
    want = reference.predict([(QUERY, d) for d in DOCUMENTS])  # the checkpoint's activation: Identity (logits)
    order = np.argsort(-want, kind="stable")

    ranked = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True})
    assert [r["index"] for r in ranked] == order.tolist()
    np.testing.assert_allclose([r["score"] for r in ranked], want[order], atol=1e-5, rtol=0)
    assert [r["text"] for r in ranked] == [DOCUMENTS[i] for i in order]
    raw = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS[:2], "raw_scores": True, "model": "ce"})
    np.testing.assert_allclose(sorted(r["score"] for r in raw), sorted(want[:2]), atol=1e-5, rtol=0)

    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    cohere = post(server, "/v1/rerank", {"query": QUERY, "documents": documents, "top_n": 2, "return_documents": True})
    assert cohere["model"] == "ce" and cohere["usage"]["total_tokens"] > 0
    assert [r["index"] for r in cohere["results"]] == order[:2].tolist()
    np.testing.assert_allclose([r["relevance_score"] for r in cohere["results"]], want[order[:2]], atol=1e-5, rtol=0)
    assert [r["document"]["text"] for r in cohere["results"]] == [DOCUMENTS[i] for i in order[:2]]
    plain = post(server, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})
    assert len(plain["results"]) == len(DOCUMENTS) and "document" not in plain["results"][0]


def test_a_pairs_score_does_not_depend_on_its_request(server):
    alone = post(server, "/rerank", {"query": QUERY, "texts": [DOCUMENTS[2]], "raw_scores": True})[0]["score"]
    among = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True})
    assert abs([r["score"] for r in among if r["index"] == 2][0] - alone) <= 1e-6


def test_predict_gives_transformers_labels_and_scores(server, folders):
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(folders["clf"], attn_implementation="eager")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folders["clf"])
    texts = ["What a lovely day.", "This is awful."]
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        logits = model.eval()(**batch).logits
    probabilities = torch.softmax(logits, -1).numpy()

    batch_reply = post(server, "/predict", {"inputs": [[t] for t in texts], "model": "clf"})
    for row, reply in zip(probabilities, batch_reply):
        order = np.argsort(-row, kind="stable")
        assert [p["label"] for p in reply] == [LABELS[i] for i in order]
        np.testing.assert_allclose([p["score"] for p in reply], row[order], atol=1e-5, rtol=0)
    single = post(server, "/predict", {"inputs": texts[0], "model": "clf", "raw_scores": True})
    assert isinstance(single[0], dict)  # one input: its list alone
    np.testing.assert_allclose(sorted(p["score"] for p in single), sorted(logits[0].numpy()), atol=1e-5, rtol=0)
    pair = post(server, "/predict", {"inputs": [QUERY, DOCUMENTS[0]]})  # the first scorer: the cross-encoder
    want = post(server, "/rerank", {"query": QUERY, "texts": [DOCUMENTS[0]]})[0]["score"]
    assert pair[0]["label"] == "LABEL_0" and abs(pair[0]["score"] - want) <= 1e-6


def test_embed_sparse_gives_sentence_transformers_weights(server, folders):
    from sentence_transformers.sparse_encoder import SparseEncoder

    want = SparseEncoder(str(folders["splade"]), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense()
    reply = post(server, "/embed_sparse", {"inputs": TEXTS})
    for row, got in zip(want.numpy(), reply):
        indices = [g["index"] for g in got]
        assert sorted(indices) == np.flatnonzero(row).tolist()
        np.testing.assert_allclose([g["value"] for g in got], row[indices], atol=1e-5, rtol=0)


def test_embedding_routes_with_prompts_equal_sentence_transformers(server, folders):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folders["minilm"]), device="cpu")
    want = reference.encode(TEXTS, prompt_name="query")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    got = client.embeddings.create(input=TEXTS, model="minilm", extra_body={"prompt_name": "query"})
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-5, rtol=0)
    plain = post(server, "/embed", {"inputs": TEXTS, "prompt_name": "passage", "model": "minilm"})
    np.testing.assert_allclose(plain, reference.encode(TEXTS, prompt_name="passage"), atol=1e-5, rtol=0)

    tokens = reference.encode(TEXTS[:2], output_value="token_embeddings", prompt_name="query")
    every = post(server, "/embed_all", {"inputs": TEXTS[:2], "prompt_name": "query"})
    for want_rows, got_rows in zip(tokens, every):
        np.testing.assert_allclose(got_rows, want_rows.numpy(), atol=1e-5, rtol=0)

    vectors = reference.encode(TEXTS, normalize_embeddings=True)
    similarity = post(server, "/similarity", {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}})
    np.testing.assert_allclose(similarity, vectors[1:] @ vectors[0], atol=1e-5, rtol=0)


def test_tokenize_and_decode_use_the_models_tokenizer(server, folders):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folders["minilm"])
    ids = tokenizer("Rivers shape towns.")["input_ids"]
    pieces = post(server, "/tokenize", {"inputs": "Rivers shape towns.", "add_special_tokens": False})
    assert [p["id"] for p in pieces[0]] == ids[1:-1]
    assert post(server, "/decode", {"ids": ids}) == [tokenizer.decode(ids, skip_special_tokens=True)]
    both = post(server, "/decode", {"ids": [ids, ids[:2]], "skip_special_tokens": False, "model": "splade"})
    assert both == [tokenizer.decode(ids), tokenizer.decode(ids[:2])]


def test_requests_the_models_cannot_answer_get_a_4xx(server):
    cases = [
        ("/rerank", {"texts": ["a"]}, 400, "query is missing"),
        ("/v1/rerank", {"query": QUERY, "documents": []}, 400, "documents must be a non-empty list"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n must be a positive integer"),
        ("/v1/rerank", {"query": QUERY, "documents": [{"txt": "a"}]}, 400, "documents[0] must be a string"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "model": "gpt-4"}, 404, "'gpt-4' is not served here"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "model": "minilm"}, 400, "is an embedding model"),
        ("/rerank", {"query": QUERY, "texts": ["a"], "model": "clf"}, 400, "/rerank needs a cross-encoder"),
        ("/embed", {"inputs": "a", "model": "ce"}, 400, "/embed needs an embedding model"),
        ("/v1/embeddings", {"input": "a", "model": "splade"}, 400, "is a SPLADE sparse encoder"),
        ("/embed_sparse", {"inputs": "a", "model": "minilm"}, 400, "/embed_sparse needs a SPLADE sparse encoder"),
        ("/predict", {"inputs": ["a", "b", "c"]}, 400, "must be [text] or a pair"),
        ("/predict", {"inputs": [["a"], ["a", "b", "c"]]}, 400, "inputs[1] must be [text] or a pair"),
        ("/embed", {"inputs": "a", "prompt_name": "doc"}, 400, "no prompt named 'doc'"),
        ("/embed_sparse", {"inputs": "a", "prompt_name": "query"}, 400, "has no prompts"),
        ("/rerank", {"query": QUERY, "texts": ["word " * 600], "truncate": False}, 422, "longer than the model's"),
        ("/decode", {"ids": [10**6]}, 400, "outside the vocabulary"),
    ]
    for path, body, status, message in cases:
        got, _, reply = server.request(path, body)
        text = reply["error"]["message"] if path.startswith("/v1") else reply["error"]
        assert got == status and message in text, (path, body, reply)
        assert "\n" not in text and len(text) < 400


def test_openapi_is_written_from_the_request_types(server):
    document = server.request("/openapi.json")[2]
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    for path, kind in (
        ("/rerank", api.RerankRequest),
        ("/v1/rerank", api.CohereRerankRequest),
        ("/embed", api.EmbedRequest),
        ("/similarity", api.SimilarityRequest),
    ):
        ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{kind.__name__}"
        schema = schemas[kind.__name__]
        assert schema == json.loads(json.dumps(object_schema(kind)))
        assert set(schema["properties"]) == set(kind.__dataclass_fields__)
    rerank = schemas["CohereRerankRequest"]
    assert rerank["required"] == ["query", "documents"] and rerank["properties"]["top_n"]["minimum"] == 1
    assert schemas["SimilarityRequest"]["properties"]["inputs"]["required"] == ["source_sentence", "sentences"]
    assert set(document["paths"]) >= {"/embed_all", "/embed_sparse", "/predict", "/decode", "/tokenize", "/v1/models"}


def test_the_model_list_is_checked_before_anything_loads(folders):
    import subprocess
    import sys

    def run(*args):
        done = subprocess.run(
            [sys.executable, "-m", "minibert", "serve", "--port", "1", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stderr.strip()

    code, err = run("--model", folders["minilm"], "--model", folders["ce"], "--served-model-name", "a")
    assert code == 2 and "1 --served-model-name for 2 --model" in err and "\n" not in err
    code, err = run("--model", folders["ce"], "--model", folders["ce"])
    assert code == 2 and "two models are named 'ce'" in err
    code, err = run("--model", folders["ce"], "--served-model-name", "a", "--served-model-name", "b")
    assert code == 2 and "2 --served-model-name for 1 --model" in err
    code, err = run("--model", folders["ce"], "--model", folders["clf"], "--task", "rerank")
    assert code == 2 and "1 --task for 2 --model" in err


def test_task_names_what_a_bare_folder_computes(splade_dir, folders):
    """naver/splade-cocondenser-* ship as a bare BertForMaskedLM folder, which alone reads as an embedder:
    --task sparse serves it as SPLADE."""
    from minibert.sparse import SparseEncoder

    bare = splade_dir.parent / "mlm"
    server = Server("--model", str(bare), "--task", "sparse", "--max-queue-seconds", "60")
    try:
        status, _, reply = server.request("/embed_sparse", {"inputs": TEXTS[:2]})
        info = server.request("/info")[2]
    finally:
        server.stop()
    assert status == 200 and info["models"][0]["task"] == "sparse"
    want = SparseEncoder.from_pretrained(bare).encode(TEXTS[:2])
    for (indices, values), got in zip(want, reply):
        assert [g["index"] for g in got] == indices.tolist()
        np.testing.assert_allclose([g["value"] for g in got], values, atol=1e-6, rtol=0)
