"""Inputs and faults that once gave silently wrong answers, or errors that named nothing: each test
here failed before its fix. Command-line faults are in test_cli.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from reference import randomize_

from minibert import BertConfig, BertModel, CheckpointError, Encoder, Tokenizer
from minibert.formats.convert import convert

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse on the beach under a grey and windy sky.",
    "短い",
    "",
    "The committee postponed its decision on the new budget until the spring meeting. " * 3,
]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


# --- an encoder shared between threads ---------------------------------------------------------------


def test_concurrent_encodes_with_different_settings_match_serial(encoder):
    settings = [dict(max_length=6), dict(max_length=256), dict(max_length=9, pooling="cls"), dict(max_length=12)]
    texts = [f"{i} " + TEXTS[i % len(TEXTS)] * (1 + i % 4) for i in range(64)]
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


def test_tokenizer_truncation_is_per_call(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    long = "word " * 100
    lengths = {}

    def work(limit):
        for _ in range(50):
            lengths.setdefault(limit, set()).add(len(tok.encode([long], max_length=limit)[0].ids))

    workers = [threading.Thread(target=work, args=(n,)) for n in (8, 64, 128)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert lengths == {8: {8}, 64: {64}, 128: {102}}


# --- model inputs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    return BertModel(config).eval()


@pytest.mark.parametrize("value", [2, 0.5, -1, float("nan")])
def test_attention_mask_values_other_than_0_and_1_are_refused(tiny_model, value):
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 1, value]], dtype=torch.float32 if isinstance(value, float) else torch.int64)
    with pytest.raises(ValueError, match=f"attention_mask holds {value!r}"):
        tiny_model(ids, attention_mask=mask)


def test_attention_mask_as_ints_bools_or_floats_gives_one_answer(tiny_model):
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    ints = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        want = tiny_model(ids, attention_mask=ints).last_hidden_state
        for mask in (ints.bool(), ints.float(), ints.int()):
            torch.testing.assert_close(tiny_model(ids, attention_mask=mask).last_hidden_state, want, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["token_type_ids", "position_ids"])
def test_float_ids_are_refused(tiny_model, name):
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"{name} must be an integer tensor, got dtype torch.float32"):
        tiny_model(ids, **{name: torch.zeros(1, 3)})


# --- checkpoints -------------------------------------------------------------------------------------


@pytest.fixture
def tiny_folder(tmp_path):
    import transformers

    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(config)
    randomize_(model)
    model.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def _rewrite(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("bad,count", [(float("nan"), 1), (float("inf"), 3)])
def test_nan_or_inf_weights_are_refused(tiny_folder, bad, count):
    def poison(tensors):
        tensors["encoder.layer.1.output.dense.weight"].view(-1)[:count] = bad

    _rewrite(tiny_folder, poison)
    with pytest.raises(
        CheckpointError,
        match=rf"model\.safetensors: 'encoder\.layer\.1\.output\.dense\.weight' "
        rf"holds {count} NaN or infinite values? \(of 320\)",
    ):
        BertModel.from_pretrained(tiny_folder)


def test_a_cast_that_overflows_is_refused(tiny_folder):
    def grow(tensors):
        for key in tensors:
            tensors[key] = tensors[key].double()
        tensors["pooler.dense.weight"][0, 0] = 1e6  # finite in float64 and float32, infinite in float16

    _rewrite(tiny_folder, grow)
    assert BertModel.from_pretrained(tiny_folder, dtype=torch.float32) is not None  # fits in float32
    with pytest.raises(CheckpointError, match=r"'pooler\.dense\.weight' has values too large for torch\.float16"):
        BertModel.from_pretrained(tiny_folder, dtype=torch.float16)


def test_shards_in_the_hugging_face_cache_are_symlinks(tmp_path):
    """A sharded repo as huggingface_hub stores it: every snapshot file a link into blobs/."""
    import transformers
    from test_hub import make_repo, run

    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=20,
        max_position_embeddings=16,
    )
    model = transformers.BertModel(config)
    randomize_(model)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="10KB")
    files = {p.name: p.read_bytes() for p in (tmp_path / "sharded").iterdir()}
    assert "model.safetensors.index.json" in files and len(files) > 3
    snapshot = make_repo(tmp_path / "hf", "org/sharded", files)
    assert (snapshot / "model.safetensors.index.json").is_symlink()
    result = run(
        """
        import torch
        from minibert import BertModel
        model = BertModel.from_pretrained("org/sharded")
        print(float(model.pooler.dense.weight.sum()))
    """,
        tmp_path / "hf",
    )
    assert result.returncode == 0, result.stderr
    assert abs(float(result.stdout) - float(model.pooler.dense.weight.sum())) < 1e-4
    # the shard *names* must still be bare file names
    index = json.loads(files["model.safetensors.index.json"])
    first = next(iter(index["weight_map"]))
    for bad in ("../evil.safetensors", "/etc/passwd", "sub/x.safetensors"):
        shutil.copytree(tmp_path / "sharded", tmp_path / "bad", dirs_exist_ok=True)
        index["weight_map"][first] = bad
        (tmp_path / "bad" / "model.safetensors.index.json").write_text(json.dumps(index))
        with pytest.raises(CheckpointError, match="is not a file name inside"):
            BertModel.from_pretrained(tmp_path / "bad")


def test_a_pickle_refusal_never_advises_the_unsafe_retry(tiny_folder):
    class Payload:
        def __reduce__(self):
            return (print, ("this ran",))

    state = {"embeddings.word_embeddings.weight": torch.zeros(40, 16), "extra": Payload()}
    (tiny_folder / "model.safetensors").unlink()
    torch.save(state, tiny_folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as caught:
        BertModel.from_pretrained(tiny_folder)
    message = str(caught.value)
    assert "pytorch_model.bin: refused: it asks to unpickle print" in message
    assert "weights_only=False" not in message and "\x1b[" not in message
    assert "can run arbitrary code" in message and "safetensors" in message


@pytest.mark.parametrize(
    "what,match",
    [
        ("empty", r"model\.safetensors: holds no tensors"),
        ("empty index", r"model\.safetensors\.index\.json: not a valid shard index .*weight_map is empty"),
        ("list in bin", r"pytorch_model\.bin: expected a dict of tensors, got a list"),
        ("string in bin", r"pytorch_model\.bin: expected a dict of tensors, but 'x' holds a str"),
    ],
)
def test_empty_or_odd_checkpoints_name_the_file(tiny_folder, what, match):
    from safetensors.torch import save_file

    (tiny_folder / "model.safetensors").unlink()
    if what == "empty":
        save_file({}, tiny_folder / "model.safetensors")
    elif what == "empty index":
        (tiny_folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    elif what == "list in bin":
        torch.save([torch.ones(2)], tiny_folder / "pytorch_model.bin")
    else:
        torch.save({"x": "text"}, tiny_folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=match):
        BertModel.from_pretrained(tiny_folder)


# --- configs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,match",
    [
        ({"hidden_dropout_prob": "high"}, r"config\.json: hidden_dropout_prob must be a number, got 'high'"),
        ({"layer_norm_eps": "tiny"}, r"config\.json: layer_norm_eps must be a number, got 'tiny'"),
        ({"pad_token_id": "0"}, r"config\.json: pad_token_id must be an integer, got '0'"),
        ({"hidden_size": 10**12, "num_attention_heads": 1}, r"config\.json: this config describes .* parameters"),
        ({"hidden_size": None}, r"config\.json: hidden_size must be a positive integer, got None"),
    ],
)
def test_bad_config_values_name_the_field(tiny_folder, change, match):
    values = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**values, **change}))
    with pytest.raises(ValueError, match=match):
        BertModel.from_pretrained(tiny_folder)


def test_a_config_without_hidden_size_says_so(tiny_folder):
    values = json.loads((tiny_folder / "config.json").read_text())
    del values["hidden_size"]
    (tiny_folder / "config.json").write_text(json.dumps(values))
    with pytest.raises(ValueError, match=r"config\.json: missing field 'hidden_size'"):
        BertModel.from_pretrained(tiny_folder)


@pytest.mark.parametrize(
    "dtype,shown",
    [("float8_e4m3fn", "'float8_e4m3fn'"), ("fp16", "'fp16'"), (torch.float8_e4m3fn, "torch.float8_e4m3fn")],
)
def test_unsupported_dtypes_are_refused_by_the_name_given(tiny_folder, dtype, shown):
    with pytest.raises(ValueError, match=f"dtype must be one of float32, float16, bfloat16, float64, got {shown}"):
        BertModel.from_pretrained(tiny_folder, dtype=dtype)


def test_an_empty_model_path_is_refused(tmp_path, monkeypatch, tiny_folder):
    monkeypatch.chdir(tiny_folder)  # a model folder that "" would otherwise load
    with pytest.raises(ValueError, match="model path is empty"):
        BertModel.from_pretrained("")


# --- tokenizers and sentence-transformers folders ----------------------------------------------------


def test_a_duplicated_vocab_token_matches_transformers(tmp_path):
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hello", "##s", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"'hello' is on line 6 and again on line 8; it gets id 7"):
        ours = Tokenizer.from_pretrained(tmp_path, lowercase=True)
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    for text in ("hello worlds a", "a hello hello"):
        assert ours([text])["input_ids"][0].tolist() == reference(text)["input_ids"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\ncafé\n".encode("latin-1"), r"vocab\.txt is not UTF-8 text"),
        (b"[UNK]\n[CLS]\n[SEP]\n", r"vocab\.txt has no \[PAD\] token"),
    ],
)
def test_bad_vocab_files_name_the_file(tmp_path, content, match):
    (tmp_path / "vocab.txt").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_pretrained(tmp_path, lowercase=True)


def test_a_vocab_with_a_byte_order_mark_reads_as_without(tmp_path):
    words = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n"
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / "vocab.txt").write_text(words, encoding="utf-8")
    (tmp_path / "bom" / "vocab.txt").write_text(words, encoding="utf-8-sig")
    plain = Tokenizer.from_pretrained(tmp_path / "plain", lowercase=True)
    bom = Tokenizer.from_pretrained(tmp_path / "bom", lowercase=True)
    assert bom(["hello"])["input_ids"].tolist() == plain(["hello"])["input_ids"].tolist() == [[2, 4, 3]]


def test_a_tokenizer_json_without_unk_is_refused_at_load(minilm_dir, tmp_path):
    spec = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    del spec["model"]["vocab"]["[UNK]"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer\.json: .*lacks its unknown token '\[UNK\]'"):
        Tokenizer.from_pretrained(tmp_path)


def test_a_tokenizer_with_ids_past_the_model_is_refused_at_load(minilm_dir, tmp_path):
    shutil.copytree(minilm_dir, tmp_path / "m")
    values = json.loads((tmp_path / "m" / "config.json").read_text())
    values["vocab_size"] = 30000  # the tokenizer has 30522
    (tmp_path / "m" / "config.json").write_text(json.dumps(values))
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "m" / "model.safetensors")
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"][:30000].clone()
    save_file(tensors, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"maps '.*' to id 30521, but the model's vocab_size is 30000"):
        Encoder.from_pretrained(tmp_path / "m")


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


# --- writing -----------------------------------------------------------------------------------------


def test_convert_refuses_a_non_empty_folder_and_force_replaces_it_whole(tiny_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "pytorch_model.bin").write_bytes(b"old weights")
    (out / "pytorch_model.bin.index.json").write_text("{}")
    with pytest.raises(FileExistsError, match="is not empty"):
        convert(tiny_folder, out, lowercase=True)
    assert (out / "pytorch_model.bin").read_bytes() == b"old weights"
    (tiny_folder / "vocab.txt").write_text(VOCAB)
    convert(tiny_folder, out, lowercase=True, force=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary folder left
    assert oct((out / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + "".join(f"w{i}\n" for i in range(35))  # tiny_folder's 40 ids


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_convert_killed_midway_leaves_the_old_folder(tiny_folder, tmp_path):
    (tiny_folder / "vocab.txt").write_text(VOCAB)
    out = tmp_path / "out"
    convert(tiny_folder, out, lowercase=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = textwrap.dedent(f"""
        import os
        import minibert.formats.convert as c
        real = c.save_safetensors
        def die(*args):
            real(*args)
            os.kill(os.getpid(), 9)  # killed after config.json and the weights are written, before the end
        c.save_safetensors = die
        c.convert({str(tiny_folder)!r}, {str(out)!r}, lowercase=False, force=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert result.returncode == -9
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    BertModel.from_pretrained(out)  # still the old, whole folder


def test_save_pretrained_failure_leaves_the_old_file(tiny_folder, tmp_path, monkeypatch):
    model = BertModel.from_pretrained(tiny_folder)
    model.save_pretrained(tmp_path / "saved")
    before = (tmp_path / "saved" / "model.safetensors").read_bytes()

    def full_disk(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]


def test_convert_keeps_sentence_transformers_metadata(minilm_dir, tmp_path):
    convert(minilm_dir, tmp_path / "converted")
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (tmp_path / "converted" / name).read_bytes() == (minilm_dir / name).read_bytes()
    texts = TEXTS[:4]
    np.testing.assert_allclose(
        Encoder.from_pretrained(tmp_path / "converted").encode(texts),
        Encoder.from_pretrained(minilm_dir).encode(texts),
        atol=1e-6,
        rtol=0,
    )


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
