"""Write a tiny BERT checkpoint with real TensorFlow, in the layout of Google's BERT release.

The folder it writes (tests/data/uncased_L-2_H-32_A-4 by default) holds what Google's zip files hold:
bert_config.json, vocab.txt, bert_model.ckpt.index and bert_model.ckpt.data-00000-of-00001 (a tensor
bundle written by tf.compat.v1.train.Saver, keyed by the variable names of google-research/bert's
modeling.py, with the adam_m / adam_v slots and global_step of its optimiser), plus variables.npz, the
value of every variable as TensorFlow holds it, for the tests to compare against.

TensorFlow is needed only here, never by minibert or its tests:

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu numpy
    /tmp/tf/bin/python scripts/make_tf_fixture.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CONFIG = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "type_vocab_size": 2,
    "vocab_size": 0,  # vocab_size: set from the vocabulary
}
WORDS = (
    "the of and to a in is was he for it with as his on be at by i this had not are but from or have an "
    "they which one you were her all she there would their we him been has when who will more no if out "
    "so said what up its about into than them can only other new some could time these two may then do "
    "first any my now such like our over man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people mr how too little "
    "state good very make world still own see men work long get here between both life being under never "
    "day same another know while last might us great old year off come since against go came right used "
    "take three bert model token text hello"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##es", "##a", "##e", "##i", "##o", "##n", "##t"]


def vocabulary() -> list[str]:
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-") + list("春眠不觉晓")
    return (
        ["[PAD]"]
        + [f"[unused{i}]" for i in range(5)]
        + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + chars
        + [w for w in dict.fromkeys(WORDS) if w not in chars]
        + PIECES
    )


def google_variables(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Name -> value for every trainable variable of BertModel + the pretraining heads, Google's shapes:
    dense kernels are [in, out]; seq_relationship/output_weights is [2, hidden]."""
    H, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]

    def normal(*shape, std=0.2):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    def dense(prefix, n_in, n_out):
        return {f"{prefix}/kernel": normal(n_in, n_out), f"{prefix}/bias": normal(n_out, std=0.1)}

    def layer_norm(prefix):
        return {f"{prefix}/gamma": 1.0 + normal(H, std=0.1), f"{prefix}/beta": normal(H, std=0.1)}

    v = {
        "bert/embeddings/word_embeddings": normal(V, H),
        "bert/embeddings/token_type_embeddings": normal(config["type_vocab_size"], H),
        "bert/embeddings/position_embeddings": normal(config["max_position_embeddings"], H),
        **layer_norm("bert/embeddings/LayerNorm"),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"
        for name in ("query", "key", "value"):
            v.update(dense(f"{p}/attention/self/{name}", H, H))
        v.update(dense(f"{p}/attention/output/dense", H, H))
        v.update(layer_norm(f"{p}/attention/output/LayerNorm"))
        v.update(dense(f"{p}/intermediate/dense", H, I))
        v.update(dense(f"{p}/output/dense", I, H))
        v.update(layer_norm(f"{p}/output/LayerNorm"))
    v.update(dense("bert/pooler/dense", H, H))
    v.update(dense("cls/predictions/transform/dense", H, H))
    v.update(layer_norm("cls/predictions/transform/LayerNorm"))
    v["cls/predictions/output_bias"] = normal(V, std=0.1)
    v["cls/seq_relationship/output_weights"] = normal(2, H)
    v["cls/seq_relationship/output_bias"] = normal(2, std=0.1)
    return v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/data/uncased_L-2_H-32_A-4"))
    args = parser.parse_args()

    import tensorflow as tf

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    config = {**CONFIG, "vocab_size": len(vocab)}
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "bert_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    rng = np.random.default_rng(20181011)
    values = google_variables(config, rng)
    # The optimiser state Google's run_pretraining.py saves beside each trainable variable.
    for name in list(values):
        values[f"{name}/adam_m"] = rng.normal(0.0, 1e-3, size=values[name].shape).astype(np.float32)
        values[f"{name}/adam_v"] = rng.uniform(0.0, 1e-6, size=values[name].shape).astype(np.float32)
    values["global_step"] = np.array(1000, dtype=np.int64)

    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_")) for name, value in values.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(out / "bert_model.ckpt"), write_meta_graph=False, write_state=False)
            held = {name: session.run(var) for name, var in variables.items()}

    # What TensorFlow itself reads back from the bundle, for the tests to compare minibert's reader with.
    reader = tf.train.load_checkpoint(str(out / "bert_model.ckpt"))
    shapes = reader.get_variable_to_shape_map()
    assert set(shapes) == set(values), set(shapes) ^ set(values)
    for name in values:
        np.testing.assert_array_equal(reader.get_tensor(name), held[name])
    np.savez(out / "variables.npz", **{name: reader.get_tensor(name) for name in sorted(shapes)})
    print(f"wrote {out}: {len(values)} variables, TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
