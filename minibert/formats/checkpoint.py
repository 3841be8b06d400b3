"""Checkpoint formats: reading BERT weights from disk into a BertModel, and writing them back.

Formats read: `model.safetensors`, sharded safetensors (`model.safetensors.index.json`), and
`pytorch_model.bin` (single or sharded), the latter with `torch.load(weights_only=True)` only, which
refuses anything but tensors and plain containers. The names on disk are Hugging Face's (inherited
from Google's TensorFlow scopes); minibert/formats/names.py is the one place they meet minibert's names.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from minibert.config import MODEL_TYPES, BertConfig
from minibert.formats.errors import CheckpointError
from minibert.formats.hub import resolve
from minibert.formats.int8 import is_int8_folder
from minibert.formats.names import head_map, hf_name, is_ignored, normalize_key, to_hf_name, to_minibert_name
from minibert.model import BertModel
from minibert.relatives import model_class
from minibert.settings import as_device, as_dtype

logger = logging.getLogger(__name__)


# --- finding and reading files ---------------------------------------------------------------------

# In order of preference: safetensors cannot run code when read, pickle-based .bin files can.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
CONFIG_FILES = ("config.json", "bert_config.json")


def read_config(folder: Path) -> BertConfig:
    for name in CONFIG_FILES:
        if (folder / name).is_file():
            return BertConfig.from_json(folder / name)
    raise FileNotFoundError(f"{folder} holds no {' or '.join(CONFIG_FILES)}")


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of the first weights file found in `folder`, and the file each key came from.
    A Google TensorFlow checkpoint comes back under Hugging Face names."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        weight_map = _read_index(path) if name.endswith(".index.json") else None
        files = _shards(path, weight_map) if weight_map is not None else [path]
        tensors, origin = {}, {}
        for file in files:
            part = read_safetensors(file) if file.suffix == ".safetensors" else _read_torch_bin(file)
            for key, t in part.items():
                if key in tensors:
                    raise CheckpointError(f"{file}: key {key!r} is also in {origin[key]}")
                tensors[key], origin[key] = t, file
        for key, file in (weight_map or {}).items():
            if key not in tensors:
                raise CheckpointError(f"{path} says {key!r} is in {file}, but it is not there")
        if not tensors:
            raise CheckpointError(f"{path}: holds no tensors")
        return tensors, origin
    index = _tf_index(folder)
    if index is not None:
        from minibert.formats.tf_checkpoint import TFCheckpoint, hf_state_dict

        tensors = hf_state_dict(TFCheckpoint(index))
        return tensors, dict.fromkeys(tensors, index)
    raise FileNotFoundError(
        f"{folder} holds no weights: looked for {', '.join(WEIGHT_FILES)} and a TensorFlow *.ckpt.index"
    )


def _tf_index(folder: Path) -> Path | None:
    """The TensorFlow checkpoint index in `folder`: bert_model.ckpt.index as Google ships it, else the
    only *.index there (e.g. model.ckpt-100000.index from a pretraining run)."""
    if (folder / "bert_model.ckpt.index").is_file():
        return folder / "bert_model.ckpt.index"
    found = sorted(folder.glob("*.index"))
    found = [p for p in found if not p.name.endswith(".index.json")]
    if len(found) > 1:
        raise CheckpointError(
            f"{folder} holds several TensorFlow checkpoints ({', '.join(p.name for p in found)});"
            " point at a folder with one"
        )
    return found[0] if found else None


def _read_index(index_path: Path) -> dict[str, str]:
    """The weight_map of a shard index: checkpoint key -> shard file name."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
        if not weight_map:
            raise ValueError("weight_map is empty: it names no tensor")
        return weight_map
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid shard index ({type(e).__name__}: {e})") from None


def _shards(index_path: Path, weight_map: dict[str, str]) -> list[Path]:
    # The *name* must be a bare file name; the file itself may be a symlink, as every file in a Hugging
    # Face cache snapshot is (into ../../blobs/).
    files = sorted({f for f in weight_map.values() if isinstance(f, str)})
    for f in weight_map.values():
        if not isinstance(f, str) or f in ("", ".", "..") or "/" in f or "\\" in f or "\0" in f:
            raise CheckpointError(f"{index_path}: shard {f!r} is not a file name inside {index_path.parent}")
    missing = [f for f in files if not (index_path.parent / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{index_path} names shard {missing[0]}, which is not in {index_path.parent}")
    return [index_path.parent / f for f in files]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        # weights_only=True: the unpickler accepts tensors and plain containers, never arbitrary code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message advises weights_only=False, which would run whatever the file holds: never.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it asks to unpickle {found.group(1)}" if found else "it is not a plain pickle of tensors"
        raise CheckpointError(
            f"{path}: refused: {what}, and minibert reads .bin files with torch.load(weights_only=True) only, "
            "since unpickling anything else can run arbitrary code; use a safetensors copy of the weights"
        ) from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got a {type(state).__name__}")
    for key, t in state.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: expected a dict of tensors, but {key!r} holds a {type(t).__name__}")
    return state


# --- filling a model -------------------------------------------------------------------------------


class _SkipRandomInit(TorchFunctionMode):
    """Turns the random initialisers into no-ops (they return their tensor untouched)."""

    NAMES = {
        "normal_",
        "uniform_",
        "trunc_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.NAMES:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextmanager
def skeleton():
    """Build modules whose weights are about to be replaced: on the meta device (no memory) and without
    random initialisation. On meta tensors that is not free either: the first `normal_` makes torch import
    some 800 modules (1.0 s and 68 MB, measured), a third of the time it takes to embed one sentence."""
    with torch.device("meta"), _SkipRandomInit():
        yield


def encoder_weights(tensors: dict, origin: dict, config: BertConfig) -> tuple[dict, list[str]]:
    """Map checkpoint keys to minibert names and check them against the config.

    Returns the encoder's state dict and the checkpoint keys left for other modules (heads). Raises
    CheckpointError for a key nobody understands, a missing weight, or a shape the config does not give.
    """
    expected = config.weight_shapes()
    family = config.model_type
    state, rest = {}, []
    for key, t in tensors.items():
        norm = normalize_key(key, family)
        name = to_minibert_name(norm, family)
        if name is None:
            if not is_ignored(norm):
                raise CheckpointError(f"{origin[key]}: unexpected key {key!r}" + _layer_hint(norm, config))
            rest.append(key)
            continue
        if name not in expected:
            raise CheckpointError(f"{origin[key]}: unexpected key {key!r}" + _layer_hint(norm, config))
        if name in state:
            raise CheckpointError(f"{origin[key]}: {key!r} fills {name}, which another key already filled")
        if tuple(t.shape) != expected[name]:
            raise CheckpointError(
                f"{origin[key]}: {key!r} has shape {tuple(t.shape)}, but the config expects {expected[name]}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{origin[key]}: {key!r} has dtype {t.dtype}; expected floating point")
        check_finite(t, key, origin[key])
        state[name] = t

    missing = [n for n in expected if n not in state and not n.startswith("pooler.")]
    if missing:
        where = sorted({str(p) for p in origin.values()}) or ["(empty checkpoint)"]
        raise CheckpointError(
            f"{', '.join(where)}: missing encoder weight {to_hf_name(missing[0], family)!r} ({len(missing)} missing "
            "in all)"
        )
    pooler = {"pooler.dense.weight", "pooler.dense.bias"}
    if len(pooler & state.keys()) == 1:
        where = ", ".join(sorted({str(p) for p in origin.values()}))
        raise CheckpointError(f"{where}: missing pooler weight {to_hf_name((pooler - state.keys()).pop(), family)!r}")
    return state, rest


def check_finite(t: torch.Tensor, key: str, where) -> None:
    """A NaN or infinity in a weight makes every output NaN: refuse it at load, naming the key."""
    if not _all_finite(t):
        bad = int(t.numel() - torch.isfinite(t).sum())
        raise CheckpointError(
            f"{where}: {key!r} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (of {t.numel()})"
        )


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in `t`: both reach its minimum or maximum, and one aminmax pass is 14x faster
    than isfinite() over bert-base's weights (0.07 s against 1.0 s, measured)."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    low, high = torch.aminmax(t)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def cast(model, device, dtype, where):
    """model.to(device, dtype), refusing a dtype too narrow for the weights (e.g. float64 values of 1e6
    become infinity in float16)."""
    target = as_dtype(dtype)
    before = {n: p.dtype for n, p in model.state_dict().items()}
    model = model.to(device=as_device(device), dtype=target)
    for name, t in model.state_dict().items():
        if before[name] != target and not _all_finite(t):
            raise CheckpointError(
                f"{where}: {name!r} has values too large for {target} (they become infinite); "
                "load it in a wider dtype such as torch.float32"
            )
    return model.eval()


def _layer_hint(key: str, config: BertConfig) -> str:
    m = re.match(r"encoder\.layer\.(\d+)\.", key)
    if m and int(m.group(1)) >= config.num_hidden_layers:
        return f" (layer {m.group(1)}, but num_hidden_layers is {config.num_hidden_layers})"
    return ""


def refuse_int8(folder: Path) -> None:
    """A saved int8 folder is no float checkpoint: say so, and what loads it, rather than fail on its keys."""
    if is_int8_folder(folder):
        raise CheckpointError(
            f"{folder} holds an int8 model (saved by minibert quantize or an int8 Encoder): load it with "
            "Encoder.from_pretrained or `minibert embed --model`; BertModel, the heads, convert, parity, inspect "
            "and dump need the float model it was quantized from"
        )


def read_checkpoint(name_or_path, *, revision=None, local_files_only=False):
    """folder, config, every tensor, and the file each came from, for a folder or Hub id."""
    folder = resolve(name_or_path, revision=revision, local_files_only=local_files_only)
    refuse_int8(folder)
    return (folder, read_config(folder), *read_state_dict(folder))


def load_model(
    name_or_path,
    *,
    device=None,
    dtype=None,
    revision=None,
    local_files_only=False,
    attention: str = "sdpa",
    warn_no_pooler: bool = True,
) -> BertModel:
    as_device(device), as_dtype(dtype)  # refused before the files are read
    folder, config, tensors, origin = read_checkpoint(
        name_or_path, revision=revision, local_files_only=local_files_only
    )
    state, rest = encoder_weights(tensors, origin, config)
    if rest:
        logger.info("%s: left %d non-encoder keys unused (%s, ...)", folder, len(rest), rest[0])
    if "pooler.dense.weight" not in state and warn_no_pooler:
        warnings.warn(f"{folder}: the checkpoint has no pooler weights; pooler_output will be None", stacklevel=3)
    return cast(build_model(config, state, attention), device, dtype, folder)


def build_model(config: BertConfig, state: dict, attention: str = "sdpa") -> BertModel:
    """A BertModel holding `state` (minibert names, as encoder_weights returns them); a pooler if the state
    has one. Built as a skeleton, so no memory or time goes into random weights that are overwritten."""
    with skeleton():
        model = model_class(config)(config, add_pooler="pooler.dense.weight" in state, attention=attention)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def save_model(model: BertModel, directory, prefix: str = "") -> None:
    """Write `config.json` and `model.safetensors` with Hugging Face names (`prefix` + name)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_json(directory / "config.json")
    family = model.config.model_type
    tensors = {prefix + to_hf_name(n, family): t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    save_safetensors(tensors, directory / "model.safetensors")


def load_head_model(cls, name_or_path, *, device=None, dtype=None, revision=None, local_files_only=False, **kwargs):
    """A model of one of the head classes in minibert/heads.py, from any checkpoint the encoder loads from.

    The encoder must be complete (as for BertModel); head weights are taken where the checkpoint has
    them, and the rest (a new classifier, a pooler a masked-LM checkpoint lacks) are initialised fresh
    and named in a warning. Keys of other heads are ignored.
    """
    as_device(device), as_dtype(dtype)  # refused before the files are read
    folder, config, tensors, origin = read_checkpoint(
        name_or_path, revision=revision, local_files_only=local_files_only
    )
    family = config.model_type
    encoder_state, rest = encoder_weights(tensors, origin, config)
    found = {normalize_key(k, family): k for k in rest}
    for bias, alias in (
        ("cls.predictions.bias", "cls.predictions.decoder.bias"),
        ("lm_head.bias", "lm_head.decoder.bias"),
    ):
        if bias not in found and alias in found:
            found[bias] = found.pop(alias)  # the output bias under its other (tied) name
    names = head_map(family)
    head_state = {names[norm]: key for norm, key in found.items() if norm in names}
    takes_labels = "num_labels" in inspect.signature(cls).parameters
    if takes_labels and kwargs.get("num_labels") is None:  # from the checkpoint's classifier, else 2
        out = next((n for n in ("classifier.weight", "classifier.out_proj.weight") if n in head_state), None)
        kwargs["num_labels"] = tensors[head_state[out]].shape[0] if out else 2

    with skeleton():
        expected = cls(config, **kwargs).state_dict()
    if any(not n.startswith("bert.") and n not in names.values() for n in expected):  # a head the family lacks
        raise CheckpointError(
            f"{folder}: a {family} checkpoint; minibert reads BERT's relatives as BertModel, "
            f"BertForSequenceClassification (cross-encoders, classifiers) and BertForMaskedLM (not ELECTRA's "
            f"discriminator), not as {cls.__name__}"
        )
    state = {}
    for name, t in encoder_state.items():
        if "bert." + name in expected:
            state["bert." + name] = t
    for name in expected:
        if name not in head_state:
            continue
        key = head_state[name]
        t = tensors[key]
        if tuple(t.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{origin[key]}: {key!r} has shape {tuple(t.shape)}, but {cls.__name__} "
                f"expects {tuple(expected[name].shape)}"
            )
        check_finite(t, key, origin[key])
        state[name] = t
    missing = [name for name in expected if name not in state]
    if missing:  # real weights with BERT's init for what the checkpoint lacks
        model = cls(config, **kwargs)
        model.newly_initialized = [hf_name(name, family) for name in missing]
        warnings.warn(
            f"{folder}: {cls.__name__} weights not in the checkpoint, newly initialised: "
            f"{', '.join(model.newly_initialized)}",
            stacklevel=3,
        )
    else:
        with skeleton():
            model = cls(config, **kwargs)
    model.load_state_dict(state, strict=not missing, assign=True)
    return cast(model, device, dtype, folder)


def save_head_model(model, directory) -> None:
    """`config.json` naming the head's class (and its labels) and `model.safetensors` under HF names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra = {}
    if "num_labels" in model.init_kwargs():
        n = model.init_kwargs()["num_labels"]
        extra = {"id2label": {str(i): f"LABEL_{i}" for i in range(n)}, "label2id": {f"LABEL_{i}": i for i in range(n)}}
    family = model.config.model_type
    architecture = type(model).__name__.replace("Bert", MODEL_TYPES[family].removesuffix("Model"), 1)
    model.config.save_json(directory / "config.json", architecture, **extra)
    tensors = {hf_name(n, family): t.detach().cpu().contiguous() for n, t in model.state_dict().items()}
    save_safetensors(tensors, directory / "model.safetensors")


def save_safetensors(tensors: dict, path: Path) -> None:
    """safetensors' save_file, through a temporary file renamed into place (minibert/formats/atomic.py)."""
    from safetensors.torch import save_file

    from minibert.formats.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
