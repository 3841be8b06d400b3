"""minibert dump and minibert compare: golden activations, and the first tensor that goes wrong in a port.

The ports here are minibert itself with one bug planted (a patched copy, or a patched function); for
each, compare must name the step where the bug first shows."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import minibert.model
from minibert import BertModel, Tokenizer
from minibert.tools.compare import compare, format_report
from minibert.tools.dump import activations, read_dump, write_dump
from minibert.tools.steps import step_names

TEXTS = ["The cat sat on the mat.", "A dog barked at the mailman all morning long.", "Hi."]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir)
    batch = Tokenizer.from_pretrained(minilm_dir)(TEXTS)
    assert (batch["attention_mask"] == 0).any()  # padding, so a misplaced mask shows
    return model, batch


def as_numpy(tensors):
    return {k: v.numpy() for k, v in tensors.items()}


@pytest.fixture(scope="module")
def golden(minilm):
    model, batch = minilm
    return as_numpy(activations(model, batch))


def tanh_gelu(model, monkeypatch):
    for layer in model.layers:
        layer.ffn.act = partial(F.gelu, approximate="tanh")


def eps_1e5(model, monkeypatch):
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-5


def swap_query_key(model, monkeypatch):
    a = model.layers[2].attention
    a.query, a.key = a.key, a.query


def transposed_weight(model, monkeypatch):
    w = model.layers[1].attention.value.weight
    w.data = w.data.T.contiguous()


def mask_after_softmax(model, monkeypatch):
    def attention(q, k, v, mask=None, dropout_p=0.0, record=None):
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        probs = scores.softmax(dim=-1) + (0 if mask is None else mask)  # the bug: masked after the softmax
        if record is not None:
            record("scores", scores), record("masked_scores", scores), record("probs", probs)
        return probs @ v, probs

    monkeypatch.setattr(minibert.model, "attention", attention)


def positions_off_by_one(model, monkeypatch):
    forward = model.embeddings.forward
    model.embeddings.forward = lambda ids, types, positions: forward(ids, types, positions + 1)


def no_scaling(model, monkeypatch):
    def attention(q, k, v, mask=None, dropout_p=0.0, record=None):
        scores = q @ k.transpose(-2, -1)  # the bug: no 1/sqrt(D)
        masked = scores if mask is None else scores + mask
        probs = masked.softmax(dim=-1)
        if record is not None:
            record("scores", scores), record("masked_scores", masked), record("probs", probs)
        return probs @ v, probs

    monkeypatch.setattr(minibert.model, "attention", attention)


PLANTS = [
    (tanh_gelu, "layers.0.ffn.act", None),
    (eps_1e5, "embeddings.output", None),
    (swap_query_key, "layers.2.attention.query", "matches the reference's layers.2.attention.key"),
    (transposed_weight, "layers.1.attention.value", None),
    (mask_after_softmax, "layers.0.attention.probs", None),
    (positions_off_by_one, "embeddings.position", None),
    (no_scaling, "layers.0.attention.scores", None),
]


@pytest.mark.parametrize("plant,first,hint", PLANTS, ids=[p[0].__name__ for p in PLANTS])
def test_compare_names_the_step_of_each_planted_bug(minilm, golden, monkeypatch, plant, first, hint):
    model, batch = minilm
    port = copy.deepcopy(model)
    plant(port, monkeypatch)
    report = compare(golden, as_numpy(activations(port, batch)))
    assert report.first_failure == first, format_report(report)
    rows = {r.name: r for r in report.rows}
    before = list(golden).index(first)
    assert all(rows[n].status == "ok" for n in list(golden)[:before] if not n.startswith("inputs."))
    assert report.agreeing_inputs, format_report(report)  # the step's inputs still agree
    if hint:
        assert any(hint in d for d in report.diagnosis), report.diagnosis


def test_a_clean_port_agrees_everywhere(minilm, golden):
    model, batch = minilm
    report = compare(golden, as_numpy(activations(copy.deepcopy(model), batch)))
    assert report.ok and all(r.max_abs == 0 for r in report.rows)


def test_padding_is_zero_and_ignored(minilm, golden):
    _, batch = minilm
    pad = batch["attention_mask"].numpy() == 0
    assert (golden["layers.3.ffn.norm"][pad] == 0).all()
    probs = golden["layers.3.attention.probs"]  # (B, N, L, L): padded key columns and query rows are 0
    assert (probs.transpose(0, 2, 1, 3)[pad] == 0).all() and (probs.transpose(0, 3, 1, 2)[pad] == 0).all()
    noisy = {k: v.copy() for k, v in golden.items()}
    noisy["layers.3.ffn.norm"][pad] = 123.0  # anything at padded positions is not compared
    assert compare(golden, noisy).ok


def test_shapes_dtypes_and_missing_tensors_are_told_apart(golden):
    candidate = {k: v.astype(np.float64) for k, v in golden.items() if k != "pooler.output"}
    candidate["layers.0.attention.scores"] = np.swapaxes(golden["layers.0.attention.scores"], -1, -2).copy()
    candidate["layers.1.ffn.up"] = golden["layers.1.ffn.up"][..., :10]
    candidate["extra.tensor"] = np.zeros(3)
    report = compare(golden, candidate)
    rows = {r.name: r for r in report.rows}
    assert report.first_failure == "layers.0.attention.scores" and not report.ok
    assert rows["layers.1.ffn.up"].status == "shape" and "is not the reference's" in rows["layers.1.ffn.up"].note
    assert rows["pooler.output"].status == "missing" and report.only_in_candidate == ["extra.tensor"]
    assert "dtype float64 against float32" in rows["embeddings.word"].note


def test_transposed_shape_is_named():
    ref = {"inputs.attention_mask": np.ones((1, 3)), "w": np.arange(6.0).reshape(1, 2, 3)}
    report = compare(ref, {"w": np.arange(6.0).reshape(1, 3, 2)})
    assert "shape (1, 3, 2) is the transpose of the reference's (1, 2, 3)" in report.diagnosis[0]


def test_dump_file_and_npy_folder_round_trip(minilm, golden, tmp_path):
    model, batch = minilm
    tensors = activations(model, batch)
    write_dump(tmp_path / "g.safetensors", tensors, {"texts": TEXTS})
    back, meta = read_dump(tmp_path / "g.safetensors")
    assert list(back) == list(tensors) and json.loads(meta["steps"]) == list(tensors)
    assert json.loads(meta["texts"]) == TEXTS and meta["format"] == "minibert-activations/1"
    folder = tmp_path / "npy"
    folder.mkdir()
    for name, value in golden.items():
        np.save(folder / f"{name}.npy", value)
    npy, _ = read_dump(folder)
    assert compare(back, npy).ok


def test_dump_and_compare_commands(tmp_path, minilm_dir):
    out = tmp_path / "golden.safetensors"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "minibert",
            "dump",
            *TEXTS[:2],
            "--pair",
            "It purred.",
            "--pair",
            "The mailman ran.",
            "-o",
            str(out),
        ],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    tensors, meta = read_dump(out)
    assert [n for n in tensors if not n.startswith("inputs.")] == step_names(6)
    assert json.loads(meta["wordpieces"])[0][:3] == ["[CLS]", "the", "cat"]
    assert json.loads(meta["config"])["hidden_size"] == 384 and meta["dtype"] == "float32"
    assert (tensors["inputs.token_type_ids"][0] == 1).any()
    same = subprocess.run(
        [sys.executable, "-m", "minibert", "compare", str(out), str(out)], capture_output=True, timeout=300
    )
    assert same.returncode == 0 and b"all 97 tensors agree" in same.stdout
    broken = dict(tensors)
    broken["layers.4.ffn.down"] = broken["layers.4.ffn.down"] * 1.01
    folder = tmp_path / "port"
    folder.mkdir()
    for name, value in broken.items():
        np.save(folder / f"{name}.npy", value)
    differ = subprocess.run(
        [sys.executable, "-m", "minibert", "compare", str(out), str(folder), "--json"], capture_output=True, timeout=300
    )
    assert differ.returncode == 1
    report = json.loads(differ.stdout)
    assert report["first_failure"] == "layers.4.ffn.down" and report["agreeing_inputs"] == ["layers.4.ffn.act"]


# --- compare agrees only when there is something to agree on -----------------------------------------------


def test_a_reference_without_steps_agrees_with_nothing(golden):
    inputs_only = {k: v for k, v in golden.items() if k.startswith("inputs.")}
    with pytest.raises(ValueError, match="the reference holds no step tensors"):
        compare(inputs_only, golden)
    with pytest.raises(ValueError, match="the candidate holds none of the reference's step tensors"):
        compare(golden, inputs_only, subset=True)


def test_a_complex_candidate_fails(golden):
    candidate = dict(golden)
    candidate["layers.0.ffn.up"] = golden["layers.0.ffn.up"].astype(np.complex64)
    report = compare(golden, candidate)
    assert not report.ok and report.first_failure == "layers.0.ffn.up"
    assert "dtype complex64: a step holds real numbers" in format_report(report)


def test_the_candidates_inputs_must_be_the_references(golden):
    candidate = dict(golden)
    candidate["inputs.input_ids"] = golden["inputs.input_ids"].copy()
    candidate["inputs.input_ids"][0, 1] += 1
    report = compare(golden, candidate)
    assert not report.ok and report.first_failure == "inputs.input_ids"
    assert "the candidate ran on other inputs" in format_report(report)


def test_identical_dumps_holding_infinities_agree(golden):
    reference = dict(golden)
    reference["layers.2.attention.masked_scores"] = golden["layers.2.attention.masked_scores"].copy()
    reference["layers.2.attention.masked_scores"][0, 0, 0, :2] = [np.inf, -np.inf]
    assert compare(reference, {k: v.copy() for k, v in reference.items()}).ok


@pytest.mark.parametrize("atol", [-1.0, float("nan"), float("inf"), 1e308])
def test_a_tolerance_that_means_nothing_is_refused(golden, atol):
    with pytest.raises(ValueError, match="atol must be a number from 0 to"):
        compare(golden, golden, atol=atol)


def test_subset_compares_only_what_the_candidate_holds(golden):
    few = {k: v for k, v in golden.items() if k.startswith(("inputs.", "layers.0.attention"))}
    assert not compare(golden, few).ok  # by default every step must be there
    report = compare(golden, few, subset=True)
    assert report.ok and len(report.not_compared) == len([k for k in golden if not k.startswith("inputs.")]) - 10


def test_awkward_candidate_files_get_a_message_naming_them(golden, tmp_path):
    folder = tmp_path / "port"
    folder.mkdir()
    np.save(folder / "layers.0.ffn.up.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"layers\.0\.ffn\.up\.npy: holds Python objects \(a pickle\)") as refused:
        read_dump(folder)
    assert "allow_pickle" not in str(refused.value)
    import torch
    from safetensors.torch import save_file

    save_file(
        {"layers.0.ffn.up": torch.tensor([[1.5, -2.25]], dtype=torch.bfloat16)},
        tmp_path / "bf16.safetensors",
        metadata={"steps": "not json"},
    )
    with pytest.raises(ValueError, match=r"bf16\.safetensors: metadata 'steps' is not a JSON list"):
        read_dump(tmp_path / "bf16.safetensors")
    save_file({"layers.0.ffn.up": torch.tensor([[1.5, -2.25]], dtype=torch.bfloat16)}, tmp_path / "ok.safetensors")
    tensors, _ = read_dump(tmp_path / "ok.safetensors")  # numpy has no bfloat16: read as the float32 it is
    assert tensors["layers.0.ffn.up"].dtype == np.float32 and tensors["layers.0.ffn.up"].tolist() == [[1.5, -2.25]]
