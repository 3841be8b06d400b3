"""A plain sentence-transformers model behind FastAPI: the baseline server of `scripts/bench.py --cases
serve`, as many deployments write it (one encode per request, in FastAPI's thread pool).

    python scripts/st_server.py MODEL_FOLDER PORT
    POST /v1/embeddings {"input": [...]} -> OpenAI's response shape
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from sentence_transformers import SentenceTransformer

model = SentenceTransformer(sys.argv[1], device="cpu")
app = FastAPI()


@app.post("/v1/embeddings")
def embeddings(body: dict):
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    vectors = model.encode(texts, normalize_embeddings=True)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)],
    }


@app.get("/health")
def health():
    return {"status": "ready"}


if __name__ == "__main__":
    model.encode(["warm-up"])
    print("ready", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
