"""The parity tests on a CUDA device; every test here is skipped cleanly without one.

float32 runs with TF32 off (the autouse fixture in conftest.py) at the CPU tolerance, 1e-5.
float16 / bfloat16 compare against transformers in the same dtype. Tolerances are set from the
differences measured on all-MiniLM-L6-v2 (hidden values up to |10|), where the fused and explicit
attention kernels round differently: float16 up to 7.8e-3 and bfloat16 up to 3.9e-2 on hidden states
(half an ulp of bfloat16 at 8 is 3.1e-2), pooler 2.8e-4 / 2.2e-3.
"""

from __future__ import annotations

import pytest
import torch
from reference import assert_both_paths_match, assert_outputs_match
from test_model_parity import SENTENCES, padded_batch, tiny_reference

from minibert import BertModel, Tokenizer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

HALF_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # used as both atol and rtol


def to_cuda(batch):
    return {k: v.cuda() for k, v in batch.items()}


def test_tiny_float32(tmp_path):
    ref = tiny_reference(tmp_path, 3, 4, 32).cuda()
    model = BertModel.from_pretrained(tmp_path, device="cuda")
    input_ids, attention_mask, token_type_ids = (t.cuda() for t in padded_batch())
    kwargs = dict(attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=True)
    with torch.no_grad():
        expected = ref(input_ids, **kwargs, output_attentions=True)
        assert_outputs_match(model(input_ids, **kwargs, output_attentions=True), expected, attention_mask)
        assert_outputs_match(model(input_ids, **kwargs), expected, attention_mask, attentions=False)


def test_minilm_float32(minilm_dir, hf_minilm):
    import copy

    ref = copy.deepcopy(hf_minilm).cuda()
    model = BertModel.from_pretrained(minilm_dir, device="cuda")
    assert_both_paths_match(model, ref, to_cuda(Tokenizer.from_pretrained(minilm_dir)(SENTENCES)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_minilm_half_precision(minilm_dir, dtype):
    import transformers

    ref = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager", dtype=dtype).cuda().eval()
    model = BertModel.from_pretrained(minilm_dir, device="cuda", dtype=dtype)
    batch = to_cuda(Tokenizer.from_pretrained(minilm_dir)(SENTENCES))
    tol = HALF_TOLERANCE[dtype]
    keep = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = ref(**batch, output_hidden_states=True)
        for output_attentions in (False, True):
            ours = model(**batch, output_hidden_states=True, output_attentions=output_attentions)
            assert ours.last_hidden_state.dtype == dtype
            for a, b in zip(ours.hidden_states, expected.hidden_states):
                torch.testing.assert_close(a[keep], b[keep], atol=tol, rtol=tol)
            torch.testing.assert_close(ours.pooler_output, expected.pooler_output, atol=tol, rtol=tol)
            assert torch.isfinite(ours.last_hidden_state).all()


def test_encoder_on_cuda_matches_cpu(minilm_dir):
    import numpy as np

    from minibert import Encoder

    cpu = Encoder.from_pretrained(minilm_dir).encode(SENTENCES)
    gpu = Encoder.from_pretrained(minilm_dir, device="cuda").encode(SENTENCES)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5, rtol=0)


def test_pretraining_heads_and_gradients_on_cuda(tmp_path):
    import transformers

    from minibert import BertForPreTraining

    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        attn_implementation="eager",
    )
    ref = transformers.BertForPreTraining(config).cuda().eval()
    ref.save_pretrained(tmp_path)
    ours = BertForPreTraining.from_pretrained(tmp_path, device="cuda")
    input_ids, attention_mask, token_type_ids = (t.cuda() for t in padded_batch(types=2))
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    nsp = torch.tensor([0, 1, 0, 1], device="cuda")
    o = ours(input_ids, attention_mask, token_type_ids, labels=labels, next_sentence_label=nsp)
    r = ref(input_ids, attention_mask, token_type_ids, labels=labels, next_sentence_label=nsp)
    torch.testing.assert_close(o.prediction_logits, r.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(o.loss, r.loss, atol=1e-5, rtol=0)
    o.loss.backward()
    r.loss.backward()
    torch.testing.assert_close(
        ours.bert.embeddings.word_embeddings.weight.grad,
        ref.bert.embeddings.word_embeddings.weight.grad,
        rtol=1e-4,
        atol=1e-6,
    )
