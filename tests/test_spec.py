"""minibert/tools/spec.py, the numpy specification, against BertModel: real MiniLM weights and bert-base shapes,
in float32 and in float64."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from minibert import BertModel, Tokenizer
from minibert.tools import spec

TEXTS = ["A man is eating food.", "The girl is carrying a baby on her back through the crowded market.", "短い"]


def check_against_model(model, weights, batch, atol):
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    ids, mask, types = (batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids"))
    got = spec.encode(weights, model.config, ids, mask, types)
    real = mask.astype(bool)
    worst = 0.0
    for ours, theirs in zip(got["hidden_states"], out.hidden_states):
        assert ours.dtype == np.dtype(str(theirs.dtype).removeprefix("torch."))
        worst = max(worst, float(np.abs(ours[real] - theirs.numpy()[real]).max()))
    for ours, theirs in zip(got["attentions"], out.attentions):
        worst = max(worst, float(np.abs(ours - theirs.numpy()).transpose(0, 2, 1, 3)[real].max()))  # real queries
    worst = max(worst, float(np.abs(got["pooler_output"] - out.pooler_output.numpy()).max()))
    assert worst <= atol, worst
    print(f"largest difference {worst:.3g}")


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_spec_matches_bert_model_on_minilm(minilm_dir, dtype, atol):
    model = BertModel.from_pretrained(minilm_dir, dtype=dtype)
    weights = spec.load_weights(minilm_dir, dtype=np.float64 if dtype == torch.float64 else np.float32)
    check_against_model(model, weights, Tokenizer.from_pretrained(minilm_dir)(TEXTS), atol)


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_spec_matches_bert_model_on_bert_base_shapes(bert_base, dtype, atol):
    folder, _ = bert_base
    model = BertModel.from_pretrained(folder, dtype=dtype)
    weights = spec.load_weights(folder, dtype=np.float64 if dtype == torch.float64 else np.float32)
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    types = torch.zeros_like(ids)
    types[:, 10:] = 1
    check_against_model(model, weights, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, atol)


def test_spec_imports_no_torch(minilm_dir):
    code = (
        "import sys; from minibert.tools import spec; from minibert.config import BertConfig; "
        f"w = spec.load_weights({str(minilm_dir)!r}); "
        "c = BertConfig.from_json(" + repr(str(minilm_dir / "config.json")) + "); "
        "out = spec.encode(w, c, [[101, 2023, 102]]); "
        "print(out['last_hidden_state'].shape, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["(1,", "3,", "384)", "False"], result.stderr
