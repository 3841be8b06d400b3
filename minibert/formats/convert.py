"""Conversion of any checkpoint minibert reads (a Google TensorFlow release above all) into a Hugging
Face-layout folder: config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json."""

from __future__ import annotations

from pathlib import Path

from minibert.formats.atomic import atomic_folder, check_folder_target, check_not_source
from minibert.formats.checkpoint import encoder_weights, read_checkpoint, save_safetensors
from minibert.formats.errors import CheckpointError
from minibert.formats.names import HEAD_PREFIXES, normalize_key
from minibert.formats.sentence_transformers import copy_sentence_transformers_files, read_sentence_transformers_settings
from minibert.settings import max_length_for
from minibert.tokenizer import Tokenizer


def convert(src, out, *, lowercase: bool | None = None, force: bool = False) -> Path:
    """Write `src` (a folder or Hub id) to the folder `out` under Hugging Face names.

    Encoder keys are written with the `bert.` prefix next to the `cls.*` pretraining heads when the
    source has them, so `transformers.BertForPreTraining.from_pretrained(out)` finds every key;
    without heads the folder is a plain `BertModel`. `lowercase` is needed only for a folder with a
    bare vocab.txt whose name does not say cased or uncased. A sentence-transformers folder keeps its
    modules.json, pooling folder and sentence_bert_config.json.

    `out` must be new or empty, unless `force`. The folder is built beside `out` and moved into place
    whole, so an interrupted conversion leaves the old folder or the new one, never a mix.
    """
    out = Path(out)
    check_folder_target(out, force)
    folder, config, tensors, origin = read_checkpoint(src)
    check_not_source(out, folder, "the source checkpoint", folder=True)
    encoder_weights(tensors, origin, config)  # every encoder weight there, with the config's shapes
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
    tokenizer.model_max_length = max_length_for(tokenizer, config)

    state = {}
    for key, t in tensors.items():
        key = normalize_key(key)
        if key == "embeddings.position_ids":
            continue
        if not key.startswith(HEAD_PREFIXES):
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

    read_sentence_transformers_settings(folder)  # checked before anything is written
    with atomic_folder(out, force=force) as tmp:
        config.save_json(tmp / "config.json", architecture)
        save_safetensors(state, tmp / "model.safetensors")
        tokenizer.save(tmp)
        copy_sentence_transformers_files(folder, tmp)
    return out
