"""The models one `minibert serve` process serves, side by side: each with its name, its task (what its
checkpoint computes, read from its folder), the thread that loads it and runs its every forward, and its
own queue (an Infer). A request names its model, or gets the first served one whose task its route needs.

The tasks, and what decides them (`task_of`):
    embed     sentence vectors (Encoder): any BERT folder not below
    rerank    a cross-encoder (CrossEncoder): a sequence-classification checkpoint with one label
    classify  a classifier (Classifier): a sequence-classification checkpoint with several labels
    sparse    SPLADE vectors (SparseEncoder): a sentence-transformers SparseEncoder folder (modules.json)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from minibert.config import read_json
from minibert.serve.infer import Infer
from minibert.serve.schema import Refused, short

TASKS = {
    "embed": "an embedding model",
    "rerank": "a cross-encoder (reranker)",
    "classify": "a classifier",
    "sparse": "a SPLADE sparse encoder",
}


def task_of(folder) -> str:
    """What the checkpoint in `folder` computes, one of TASKS."""
    folder = Path(folder)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
        return "rerank" if labels == 1 else "classify"
    if (folder / "modules.json").is_file():
        modules = read_json(folder / "modules.json")
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
        if "SpladePooling" in kinds:
            return "sparse"
    return "embed"


@dataclass
class Model:
    """One served model. `load()` returns its Encoder, CrossEncoder, Classifier or SparseEncoder."""

    name: str
    task: str
    load: object
    loaded: object = None
    infer: Infer | None = None
    served: dict = field(default_factory=dict)  # what /info and the ready line say of it
    thread: ThreadPoolExecutor | None = None

    @property
    def engine(self):
        loaded = self.loaded
        return loaded.engine if self.task == "embed" else loaded.encoder.engine

    def start(self, limits, metrics) -> None:
        """Called in the event loop once `loaded` is set: its queue, fed by its forward."""
        self.infer = Infer(self.engine, limits, self.thread, metrics, forward=self.forward)
        self.infer.start()
        self.served = describe(self)

    def forward(self, encodings: list, output: str):
        """One request batch's rows of `output`, in the model thread: "pooled" vectors (not normalised) and
        "tokens" (each input's token vectors) for an embedder, "logits" for a scorer, "sparse" (indices,
        values) for a sparse encoder."""
        engine = self.engine
        to_numpy = engine.backend.to_numpy
        if output == "pooled":
            return to_numpy(engine.embed(encodings, engine.options(normalize=False)))
        if output == "tokens":
            return [to_numpy(v) for v in engine.token_vectors(encodings, engine.options())]
        if output == "logits":
            return self.loaded.logits_of(encodings, engine.options()).cpu().numpy()
        if output == "sparse":
            from minibert.sparse import sparse_row  # torch: imported once the models load, not to check flags

            return [sparse_row(row, None) for row in to_numpy(engine.embed(encodings, engine.options()))]
        raise ValueError(f"unknown output {output!r}")

    def warm_up_inputs(self) -> list[list]:
        """Two request batches for the warm-up: one short, one of about 1,000 tokens."""
        if self.task == "rerank":
            return [[("A warm-up query?", "A warm-up text.")], [("A warm-up query?", "A warm-up text, longer.")] * 77]
        return [["A warm-up text."], ["A warm-up text for a batch of a thousand tokens."] * 77]

    def output(self) -> str:
        """The output a warm-up computes."""
        return {"embed": "pooled", "rerank": "logits", "classify": "logits", "sparse": "sparse"}[self.task]


def describe(model: Model) -> dict:
    """What is served, for /info and the ready line: the task, the output's dimension, dtype, int8 or not,
    max length, and an embedder's pooling and normalisation or a scorer's labels."""
    from minibert.fast.quantize import Int8Linear

    engine = model.engine
    torch_model = engine.backend.model
    options = engine.options()
    out = {
        "task": model.task,
        "dtype": str(next(torch_model.parameters()).dtype).removeprefix("torch."),
        "int8": any(isinstance(m, Int8Linear) for m in torch_model.modules()),
        "max_input_length": options.max_length,
        "device": str(next(torch_model.parameters()).device),
    }
    if model.task == "embed":
        out.update(dim=engine.dim, pooling=options.pooling, normalize=options.normalize)
    elif model.task == "sparse":
        out.update(dim=engine.dim)
    else:
        out.update(labels=model.loaded.labels)
    return out


def pick(models: dict, name: str | None, tasks: tuple, route: str) -> Model:
    """The model a request on `route` uses: the one it names (404 if none is served by that name; 400 if it
    cannot do `tasks`), else the first served whose task is one of `tasks`."""
    served = ", ".join(f"{m.name} ({m.task})" for m in models.values())
    needs = " or ".join(TASKS[t] for t in tasks)
    if name is not None:
        model = models.get(name)
        if model is None:
            raise Refused(404, f"model {short(name)} is not served here; this server serves {served}", "model")
        if model.task not in tasks:
            raise Refused(
                400, f"model {name!r} is {TASKS[model.task]}, and {route} needs {needs}; served: {served}", "model"
            )
        return model
    for model in models.values():
        if model.task in tasks:
            return model
    raise Refused(400, f"{route} needs {needs}, and none is served here; served: {served}", "model")
