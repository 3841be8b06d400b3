"""The package's layering, checked from the source: imports go one way, from the command line down to the
config, and nothing imports a higher layer when it is imported. A function may import a higher layer
when it runs (BertModel.from_pretrained calls the loader), and those are listed here by name."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "minibert"

# Lowest first. A module may import, at import time, only modules of its own layer or below.
LAYERS = [
    [
        "config",
        "settings",
        "formats.errors",
        "formats.names",
        "formats.atomic",
        "formats.hub",
        "formats.int8",
        "formats.sentence_transformers",
        "fast.cpu",
        "fast.heap",
        "tools.steps",
        "tools.terminal",
        "tools.spec",
        "tools.compare",
        "engine.options",
        "engine.pooling",
        "search",
    ],
    ["tokenizer", "model", "relatives"],
    [
        "heads",
        "formats.checkpoint",
        "formats.tf_checkpoint",
        "formats.convert",
        "fast.onednn",
        "fast.quantize",
        "tools.trace",
        "tools.dump",
        "tools.explorer",
    ],
    ["engine.core", "engine.numpy_backend", "engine.torch_backend", "engine.text_encoder"],
    ["encoder", "numpy_encoder", "tools.parity"],
    ["classify", "sparse"],
    [
        "corpus.shards",
        "corpus.embed",
        "corpus.ray",
        "ray",
        "serve.limits",
        "serve.schema",
        "serve.api",
        "serve.queue",
        "serve.infer",
        "serve.models",
        "serve.http",
        "serve.app",
        "serve.run",
        "serve.ray_serve",
    ],
    ["commands"],
    ["cli", "__main__"],
]
# Imports inside a function that reach a higher layer, each for a reason.
DEFERRED_UPWARD = {
    ("model", "formats.checkpoint"): "BertModel.from_pretrained / save_pretrained call the loader",
    ("heads", "formats.checkpoint"): "the head models' from_pretrained / save_pretrained",
    ("fast.quantize", "formats.checkpoint"): "load_int8_model builds the model the loader builds",
}


def _modules():
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] != "__init__":
            yield ".".join(parts), path


def _imports(path: Path):
    """(module imported, at import time?) for every minibert module `path` imports."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("minibert."):
                base = child.module.removeprefix("minibert.")
                for alias in child.names:  # `from minibert.tools import spec` imports the module tools.spec
                    name = f"{base}.{alias.name}"
                    found.append((name if (PACKAGE / (name.replace(".", "/") + ".py")).is_file() else base, not inside))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def test_every_module_has_a_layer():
    layered = {m for layer in LAYERS for m in layer}
    assert {name for name, _ in _modules()} == layered


def test_imports_go_one_way():
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    upward = []
    for name, path in _modules():
        for target, at_import in _imports(path):
            if target in layer and layer[target] > layer[name]:
                if at_import or (name, target) not in DEFERRED_UPWARD:
                    upward.append(f"{name} -> {target}" + (" at import time" if at_import else " in a function"))
    assert upward == []


def test_model_imports_nothing_from_the_loader_at_import_time():
    assert [t for t, at_import in _imports(PACKAGE / "model.py") if at_import] == ["config"]


def test_the_readme_tour_names_every_module():
    """README.md's tour of the code has a row for every module, and no row for a module that is gone."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    tour = readme[readme.index("## A tour of the code") :]
    tour = tour[: tour.index("\n## ", 3)]
    named = set(re.findall(r"^\| `minibert/([\w/]+)\.py` \|", tour, flags=re.M))
    modules = {name.replace(".", "/") for name, _ in _modules()} - {"__main__", "ray"}  # entry points
    assert sorted(modules - named) == [] and sorted(named - modules) == []
