"""minibert against reference values that do not move with the installed transformers: slices of
transformers' outputs committed in tests/data/golden_transformers.json (scripts/make_golden.py, which
records the version), and the TensorFlow test checkpoint's forward pass computed in TensorFlow
(tests/data/uncased_L-2_H-32_A-4/tf_forward.npz, scripts/make_tf_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minibert import BertForPreTraining, BertModel, Tokenizer

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "uncased_L-2_H-32_A-4"
GOLDEN = json.loads((DATA / "golden_transformers.json").read_text(encoding="utf-8"))


def outputs(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True, output_attentions=True)


@pytest.mark.parametrize("name", ["all-MiniLM-L6-v2", "uncased_L-2_H-32_A-4"])
def test_committed_transformers_values(name, minilm_dir):
    golden, dims = GOLDEN[name], GOLDEN["dims"]
    folder = minilm_dir if name == "all-MiniLM-L6-v2" else FIXTURE
    batch = Tokenizer.from_pretrained(folder)(golden["texts"], golden.get("pairs"))
    for key, value in golden["inputs"].items():  # the tokenizer agrees too
        assert batch[key].tolist() == value, key
    out = outputs(BertModel.from_pretrained(folder), batch)
    layers = len(out.attentions)
    keep = batch["attention_mask"].bool()
    ours = {
        "last_hidden_state": out.last_hidden_state[..., :dims],
        "pooler_output": out.pooler_output[..., :dims],
        f"hidden_states_{layers // 2}": out.hidden_states[layers // 2][..., :dims],
        f"attentions_{layers - 1}_heads_0_1": out.attentions[-1][:, :2],
    }
    for key, value in ours.items():
        expected = torch.tensor(golden[key])
        if value.dim() == 3:
            value, expected = value[keep], expected[keep]
        torch.testing.assert_close(value, expected, atol=1e-5, rtol=0, msg=lambda m, key=key: f"{key}: {m}")


def test_tensorflow_forward_of_the_fixture():
    ref = np.load(FIXTURE / "tf_forward.npz")
    made = json.loads((FIXTURE / "tf_forward.json").read_text())
    assert made["tensorflow_version"] and "TensorFlow ops" in made["made_by"]
    batch = {k: torch.from_numpy(ref[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    model = BertForPreTraining.from_pretrained(FIXTURE).eval()
    with torch.no_grad():
        heads = model(**batch)
    out = outputs(model.bert, batch)
    keep = batch["attention_mask"].bool().numpy()
    worst = {"hidden_states": 0.0, "attentions": 0.0}
    for i, h in enumerate(out.hidden_states):
        worst["hidden_states"] = max(worst["hidden_states"], np.abs(h.numpy() - ref[f"hidden_states_{i}"])[keep].max())
    for i, a in enumerate(out.attentions):
        diff = np.abs(a.numpy() - ref[f"attentions_{i}"]).transpose(0, 2, 1, 3)[keep]  # real query rows
        worst["attentions"] = max(worst["attentions"], diff.max())
    worst["pooler_output"] = np.abs(out.pooler_output.numpy() - ref["pooler_output"]).max()
    worst["mlm_logits"] = np.abs(heads.prediction_logits.numpy() - ref["mlm_logits"])[keep].max()
    worst["nsp_logits"] = np.abs(heads.seq_relationship_logits.numpy() - ref["nsp_logits"]).max()
    print("minibert against TensorFlow:", {k: f"{v:.2g}" for k, v in worst.items()})
    assert all(v <= 1e-5 for v in worst.values()), worst
