"""Checkpoint formats and naming variants, the strictness of loading, and saving back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from reference import assert_outputs_match, randomize_
from safetensors.torch import load_file, save_file

from minibert import BertModel, CheckpointError
from minibert.formats.checkpoint import read_state_dict


@pytest.fixture
def tiny(tmp_path):
    """A tiny random transformers.BertForPreTraining: folder, reference encoder, its state dict."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=20,
        initializer_range=0.3,
        attn_implementation="eager",
    )
    ref = transformers.BertForPreTraining(config).eval()
    randomize_(ref)
    folder = tmp_path / "hf"
    ref.save_pretrained(folder)
    return folder, ref.bert, load_file(folder / "model.safetensors")


def check_against(folder, ref):
    model = BertModel.from_pretrained(folder)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        assert_outputs_match(
            model(ids, mask, output_hidden_states=True, output_attentions=True),
            ref(ids, mask, output_hidden_states=True, output_attentions=True),
            mask,
        )
    return model


def write_folder(folder, config_src, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((config_src / "config.json").read_text())
    for name, obj in files.items():
        if name.endswith(".safetensors"):
            save_file(obj, folder / name, metadata={"format": "pt"})
        elif name.endswith(".json"):
            (folder / name).write_text(json.dumps(obj))
        else:
            torch.save(obj, folder / name)
    return folder


def legacy_names(state):
    """pytorch-pretrained-bert style: LayerNorm.gamma / LayerNorm.beta, plus the position_ids buffer."""
    out = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    out["bert.embeddings.position_ids"] = torch.arange(20)[None]
    return out


def test_pretraining_safetensors_with_bert_prefix_and_heads(tiny):
    folder, ref, state = tiny
    assert any(k.startswith("bert.") for k in state) and any(k.startswith("cls.") for k in state)
    model = check_against(folder, ref)
    assert not model.training


def test_legacy_pytorch_bin_with_gamma_beta(tiny, tmp_path):
    folder, ref, state = tiny
    legacy = write_folder(tmp_path / "legacy", folder, {"pytorch_model.bin": legacy_names(state)})
    check_against(legacy, ref)


def test_keys_without_prefix(tiny, tmp_path):
    folder, ref, state = tiny
    bare = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    check_against(write_folder(tmp_path / "bare", folder, {"model.safetensors": bare}), ref)


def test_sharded_safetensors_written_by_transformers(tiny, tmp_path):
    folder, ref, _ = tiny
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="10KB")
    shards = list((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    check_against(tmp_path / "sharded", ref)


def test_sharded_pytorch_bin(tiny, tmp_path):
    folder, ref, state = tiny
    keys = sorted(state)
    half = len(keys) // 2
    parts = {
        "pytorch_model-00001-of-00002.bin": {k: state[k] for k in keys[:half]},
        "pytorch_model-00002-of-00002.bin": {k: state[k] for k in keys[half:]},
    }
    index = {"weight_map": {k: f for f, part in parts.items() for k in part}}
    check_against(write_folder(tmp_path / "binshards", folder, {**parts, "pytorch_model.bin.index.json": index}), ref)


def test_index_naming_a_missing_shard(tiny, tmp_path):
    folder, _, state = tiny
    index = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in state}}
    bad = write_folder(tmp_path / "bad", folder, {"model.safetensors.index.json": index})
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors"):
        BertModel.from_pretrained(bad)


def _drop(key):
    return lambda state: state.pop(key)


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            _drop("bert.encoder.layer.1.attention.self.value.bias"),
            r"missing encoder weight 'encoder\.layer\.1\.attention\.self\.value\.bias'",
        ),
        (
            _set("bert.encoder.layer.0.intermediate.dense.weight", torch.zeros(25, 16)),
            r"'bert\.encoder\.layer\.0\.intermediate\.dense\.weight' has shape \(25, 16\), but the config expects "
            r"\(24, 16\)",
        ),
        (
            _set("bert.encoder.layer.0.attention.self.rotary.weight", torch.zeros(3)),
            r"unexpected key 'bert\.encoder\.layer\.0\.attention\.self\.rotary\.weight'",
        ),
        (
            _set("bert.encoder.layer.2.output.dense.bias", torch.zeros(16)),
            r"unexpected key 'bert\.encoder\.layer\.2\.output\.dense\.bias' \(layer 2, but num_hidden_layers is 2\)",
        ),
        (_drop("bert.pooler.dense.bias"), r"missing pooler weight 'pooler\.dense\.bias'"),
        (
            _set("bert.embeddings.word_embeddings.weight", torch.zeros(50, 16, dtype=torch.int32)),
            r"'bert\.embeddings\.word_embeddings\.weight' has dtype torch\.int32; expected floating point",
        ),
    ],
)
def test_bad_checkpoints_name_the_file_and_key(tiny, tmp_path, edit, message):
    folder, _, state = tiny
    edit(state)
    bad = write_folder(tmp_path / "bad", folder, {"model.safetensors": state})
    with pytest.raises(CheckpointError, match=r"bad/model\.safetensors: .*" + message):
        BertModel.from_pretrained(bad)


def test_no_pooler_loads_and_says_so(tiny, tmp_path):
    folder, ref, state = tiny
    state = {k: v for k, v in state.items() if "pooler" not in k}
    nopool = write_folder(tmp_path / "nopool", folder, {"model.safetensors": state})
    with pytest.warns(UserWarning, match="no pooler weights"):
        model = BertModel.from_pretrained(nopool)
    ids = torch.randint(0, 50, (2, 5))
    with torch.no_grad():
        out = model(ids)
        torch.testing.assert_close(out.last_hidden_state, ref(ids).last_hidden_state, atol=1e-5, rtol=0)
    assert out.pooler_output is None


def test_truncated_safetensors_names_the_file(tiny, tmp_path):
    folder, _, _ = tiny
    data = (folder / "model.safetensors").read_bytes()
    bad = write_folder(tmp_path / "bad", folder, {})
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"bad/model\.safetensors"):
        BertModel.from_pretrained(bad)


def test_corrupt_pytorch_bin_names_the_file(tiny, tmp_path):
    folder, _, _ = tiny
    bad = write_folder(tmp_path / "bad", folder, {})
    (bad / "pytorch_model.bin").write_bytes(b"PK\x03\x04 this is no zip archive")
    with pytest.raises(CheckpointError, match=r"bad/pytorch_model\.bin"):
        BertModel.from_pretrained(bad)


class _Exploit:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Exploit.marker),))


def test_pickle_with_code_is_refused_not_run(tiny, tmp_path):
    folder, _, state = tiny
    _Exploit.marker = str(tmp_path / "pwned")
    bad = write_folder(tmp_path / "bad", folder, {"pytorch_model.bin": {**state, "x": _Exploit()}})
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin"):
        BertModel.from_pretrained(bad)
    assert not (tmp_path / "pwned").exists()


def test_missing_folder_and_empty_folder(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BertModel.from_pretrained(tmp_path / "nowhere")
    empty = write_folder(tmp_path / "empty", tiny[0], {})
    with pytest.raises(FileNotFoundError, match=r"empty holds no weights.*model\.safetensors"):
        BertModel.from_pretrained(empty)
    (empty / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="holds no config.json or bert_config.json"):
        BertModel.from_pretrained(empty)
    with pytest.raises(NotADirectoryError, match="config.json"):
        BertModel.from_pretrained(tiny[0] / "config.json")


def test_hub_id_that_cannot_be_fetched(monkeypatch):
    import minibert.formats.hub

    def offline(repo_id, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(minibert.formats.hub, "_download", offline)
    with pytest.raises(FileNotFoundError, match=r"'someone/bert-x' is not a local folder.*Hub failed: OSError"):
        BertModel.from_pretrained("someone/bert-x")


def test_dtype_and_device_arguments(tiny):
    folder, _, _ = tiny
    model = BertModel.from_pretrained(folder, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert BertModel.from_pretrained(folder, dtype="float16").embeddings.norm.weight.dtype == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16, float64, got torch.int8"):
        BertModel.from_pretrained(folder, dtype=torch.int8)


def test_save_pretrained_loads_in_transformers_without_missing_keys(tiny, tmp_path):
    import transformers

    folder, ref, _ = tiny
    BertModel.from_pretrained(folder).save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded, info = transformers.BertModel.from_pretrained(
            tmp_path / "saved", output_loading_info=True, attn_implementation="eager"
        )
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        assert_outputs_match(loaded.eval()(ids, output_hidden_states=True), ref(ids, output_hidden_states=True))
    # and back into minibert
    check_against(tmp_path / "saved", ref)


def test_read_state_dict_reports_origin(tiny):
    folder, _, state = tiny
    tensors, origin = read_state_dict(folder)
    assert tensors.keys() == state.keys()
    assert set(origin.values()) == {folder / "model.safetensors"}


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors"])
def test_index_pointing_outside_its_folder_is_refused(tiny, tmp_path, shard):
    folder, _, state = tiny
    bad = write_folder(tmp_path / "bad", folder, {"model.safetensors.index.json": {"weight_map": {"k": shard}}})
    save_file(state, tmp_path / "outside.safetensors")
    with pytest.raises(CheckpointError, match="is not a file name inside"):
        BertModel.from_pretrained(bad)


@pytest.mark.parametrize("index", [{}, {"weight_map": ["model.safetensors"]}, "not json"])
def test_unreadable_shard_index(tiny, tmp_path, index):
    folder, _, _ = tiny
    bad = write_folder(tmp_path / "bad", folder, {})
    path = bad / "model.safetensors.index.json"
    path.write_text(index if isinstance(index, str) else json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: not a valid shard index"):
        BertModel.from_pretrained(bad)


def test_loading_builds_no_random_weights(minilm_dir):
    # The model is built as a skeleton: meta tensors, random initialisers skipped. A meta-device normal_
    # alone would import torch._dynamo and sympy (about 800 modules, 1 s and 68 MB).
    code = (
        "import sys; from minibert import Encoder; "
        f"Encoder.from_pretrained({str(minilm_dir)!r}).encode('A sentence.'); "
        "print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


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


@pytest.mark.parametrize(
    "dtype,shown",
    [("float8_e4m3fn", "'float8_e4m3fn'"), ("fp16", "'fp16'"), (torch.float8_e4m3fn, "torch.float8_e4m3fn")],
)
def test_unsupported_dtypes_are_refused_by_the_name_given(tiny_folder, dtype, shown):
    with pytest.raises(ValueError, match=f"dtype must be one of float32, float16, bfloat16, float64, got {shown}"):
        BertModel.from_pretrained(tiny_folder, dtype=dtype)


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
