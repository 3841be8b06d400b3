"""Conversion of any checkpoint minibert reads (a Google TensorFlow release above all) into a Hugging
Face-layout folder: config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json."""

from __future__ import annotations

from pathlib import Path

from minibert.tokenizer import Tokenizer
from minibert.weights import CheckpointError, encoder_weights, normalize_key, read_checkpoint


def convert(src, out, *, lowercase: bool | None = None) -> Path:
    """Write `src` (a folder or Hub id) to the folder `out` under Hugging Face names.

    Encoder keys are written with the `bert.` prefix next to the `cls.*` pretraining heads when the
    source has them, so `transformers.BertForPreTraining.from_pretrained(out)` finds every key;
    without heads the folder is a plain `BertModel`. `lowercase` is needed only for a folder with a
    bare vocab.txt whose name does not say cased or uncased.
    """
    from safetensors.torch import save_file

    folder, config, tensors, origin = read_checkpoint(src)
    out = Path(out)
    if out.resolve() == folder.resolve():
        raise ValueError(f"the output folder {out} is the source folder; choose another")
    encoder_weights(tensors, origin, config)  # every encoder weight there, with the config's shapes
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_position_embeddings)

    state = {}
    for key, t in tensors.items():
        key = normalize_key(key)
        if key == "embeddings.position_ids":
            continue
        if not key.startswith(("cls.", "classifier.", "qa_outputs.")):
            key = "bert." + key
        state[key] = t.contiguous()
    heads = {k.split(".")[1] for k in state if k.startswith("cls.")}
    if heads >= {"predictions", "seq_relationship"}:
        architecture = "BertForPreTraining"
    elif "predictions" in heads:
        architecture = "BertForMaskedLM"
    elif heads:
        raise CheckpointError(f"{folder}: cls.{heads.pop()} without cls.predictions has no Hugging Face class")
    else:
        architecture = "BertModel"
        state = {k.removeprefix("bert."): t for k, t in state.items()}

    out.mkdir(parents=True, exist_ok=True)
    config.save_json(out / "config.json", architecture)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save(out)
    return out
