"""A sentence-transformers model folder's metadata: modules.json, the pooling module's config.json and
sentence_bert_config.json, read into the settings of minibert's Encoder, and copied beside a written model."""

from __future__ import annotations

from pathlib import Path

from minibert.config import read_json
from minibert.formats.atomic import copy_file

# sentence-transformers' files, kept so that a written folder pools and normalises as its source did
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")

# sentence-transformers' 1_Pooling/config.json switches -> minibert's pooling names
_ST_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
}
# sentence-transformers 6 writes one `pooling_mode` (a name, or a list of names) in place of the switches
_ST_POOLING_NAMES = {"mean": "mean", "cls": "cls", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len"}


def read_sentence_transformers_settings(folder: Path) -> dict:
    """Pooling, normalisation, maximum length and lower-casing from a sentence-transformers folder."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{modules_file}: expected a list of module objects, got {_snippet(modules)}")
    settings = {"normalize": False}
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Transformer":
            continue
        if kind == "Normalize":
            settings["normalize"] = True
        elif kind == "Pooling":
            config_file = _inside(folder, module.get("path", ""), modules_file) / "config.json"
            switches = _json_object(config_file)
            modes = [name for key, name in _ST_POOLING_KEYS.items() if switches.get(key)]
            others = [
                k for k, v in switches.items() if k.startswith("pooling_mode_") and k not in _ST_POOLING_KEYS and v
            ]
            named = switches.get("pooling_mode")
            for name in [named] if isinstance(named, str) else named if isinstance(named, list) else []:
                if name in _ST_POOLING_NAMES:
                    modes.append(_ST_POOLING_NAMES[name])
                else:
                    others.append(str(name))
            if len(modes) != 1 or others:
                raise ValueError(f"{config_file}: minibert pools one way at a time; this asks for {modes + others}")
            if switches.get("include_prompt", True) is not True:
                raise ValueError(
                    f"{config_file}: pooling that leaves out the prompt's tokens is not supported by minibert"
                )
            settings["pooling"] = modes[0]
        else:
            raise ValueError(f"{modules_file}: module type {module.get('type')!r} is not supported by minibert")
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        values = _json_object(st_config)
        max_seq_length = values.get("max_seq_length")
        if max_seq_length is not None:
            if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 2:
                raise ValueError(f"{st_config}: max_seq_length must be an integer >= 2, got {max_seq_length!r}")
            settings["max_length"] = max_seq_length
        lowercase = values.get("do_lower_case", False)
        if not isinstance(lowercase, bool):
            raise ValueError(f"{st_config}: do_lower_case must be true or false, got {lowercase!r}")
        settings["lowercase"] = lowercase
    settings |= read_prompts(folder)
    return settings


def read_prompts(folder: Path) -> dict:
    """{"prompts": {name: text}, "default_prompt_name": name or None} from config_sentence_transformers.json,
    where it names prompts (e5's "query: " and "passage: ", say); {} where it does not."""
    path = Path(folder) / "config_sentence_transformers.json"
    if not path.is_file():
        return {}
    values = _json_object(path)
    prompts = values.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError(f"{path}: prompts must map names to strings, got {_snippet(prompts)}")
    default = values.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"{path}: default_prompt_name {default!r} is not one of its prompts {sorted(prompts)}")
    return {"prompts": prompts, "default_prompt_name": default} if prompts else {}


def copy_sentence_transformers_files(folder: Path, out: Path) -> None:
    """modules.json, sentence_bert_config.json and each module folder's config.json (1_Pooling/config.json,
    ...): the files minibert reads, and nothing else that a module folder may hold. Every file is checked
    to resolve inside `folder`, so a symlink out of the model folder is refused, never copied."""
    folder = Path(folder)
    files = [Path(name) for name in SENTENCE_TRANSFORMERS_FILES]
    if (folder / "modules.json").is_file():
        files += [
            Path(module) / "config.json" for module in st_module_folders(folder, read_json(folder / "modules.json"))
        ]
    for relative in files:
        source = folder / relative
        if not source.is_file():
            if (out / relative).parent != out and source.parent.is_dir():  # a module folder with no config (Normalize)
                _inside_resolved(folder, source.parent)
                (out / relative).parent.mkdir(parents=True, exist_ok=True)
            continue
        _inside_resolved(folder, source)
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        copy_file(source, out / relative)


def _inside_resolved(folder: Path, path: Path) -> None:
    """Refuse `path` unless, with every symlink resolved, it lies inside `folder` (resolved likewise)."""
    if folder.resolve() not in path.resolve().parents:
        raise ValueError(f"{path} leads outside the model folder {folder} (to {path.resolve()}); refusing to copy it")


def st_module_folders(folder: Path, modules: list) -> list[str]:
    """The sub-folders a sentence-transformers modules.json names (e.g. 1_Pooling), each checked to
    stay inside `folder`; the Transformer module lives in the folder itself."""
    paths = []
    for module in modules:
        path = module.get("path", "") if isinstance(module, dict) else ""
        if path:
            _inside(folder, path, folder / "modules.json")
            paths.append(path)
    return paths


def _json_object(path: Path) -> dict:
    value = read_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {_snippet(value)}")
    return value


def _snippet(value) -> str:
    return f"{type(value).__name__} {str(value)[:40]}"


def _inside(folder: Path, relative, source: Path) -> Path:
    """`folder / relative`, refused when `relative` is not a plain relative path inside the folder."""
    parts = Path(relative).parts if isinstance(relative, str) else None
    if parts is None or Path(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ValueError(f"{source}: path {relative!r} does not stay inside {folder}")
    return folder / relative
