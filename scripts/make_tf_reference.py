"""Compute the TensorFlow test checkpoint's forward pass in TensorFlow: an independent reference.

Reads tests/data/uncased_L-2_H-32_A-4/bert_model.ckpt with TensorFlow's own checkpoint reader and runs
BERT's encoder written with TensorFlow ops, following the structure of google-research/bert's
modeling.py (embedding lookups, layer norm over the last axis, the additive -10000 mask, erf GELU,
post-LayerNorm residuals, tanh pooler) and its pretraining heads. Google's modeling.py itself cannot
run on TensorFlow 2 (it calls tf.contrib.layers.layer_norm), so this script's ops stand in for it.
It writes tf_forward.npz beside the checkpoint: the inputs, every hidden state, every attention map,
the pooler output and both heads' logits, and tf_forward.json saying how they were made.

TensorFlow is needed only here, never by minibert or its tests:

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu numpy
    /tmp/tf/bin/python scripts/make_tf_reference.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# Three sequences of the fixture's vocabulary: [CLS] ... [SEP] ... [SEP], with padding (id 0) and segments.
INPUT_IDS = [
    [7, 80, 120, 95, 8, 130, 99, 8, 0, 0],
    [7, 60, 61, 62, 63, 64, 65, 66, 67, 8],
    [7, 110, 8, 0, 0, 0, 0, 0, 0, 0],
]
TOKEN_TYPE_IDS = [[0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [0] * 10, [0] * 10]


def forward(tf, v, config, input_ids, token_type_ids, attention_mask):
    H, N = config["hidden_size"], config["num_attention_heads"]
    D = H // N
    B, L = input_ids.shape
    eps = 1e-12

    def layer_norm(x, prefix):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + eps) * v[prefix + "/gamma"] + v[prefix + "/beta"]

    def dense(x, prefix):
        return tf.tensordot(x, v[prefix + "/kernel"], axes=1) + v[prefix + "/bias"]

    x = (
        tf.gather(v["bert/embeddings/word_embeddings"], input_ids)
        + tf.gather(v["bert/embeddings/token_type_embeddings"], token_type_ids)
        + v["bert/embeddings/position_embeddings"][:L][None]
    )
    x = layer_norm(x, "bert/embeddings/LayerNorm")
    adder = (1.0 - tf.cast(attention_mask[:, None, None, :], tf.float32)) * -10000.0  # as modeling.py
    hidden, attentions = [x], []
    for i in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{i}"

        def heads(t):
            return tf.transpose(tf.reshape(t, [B, L, N, D]), [0, 2, 1, 3])

        q, k, value = (heads(dense(x, f"{p}/attention/self/{n}")) for n in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / np.sqrt(float(D)))
        probs = tf.nn.softmax(scores + adder, axis=-1)
        context = tf.reshape(tf.transpose(tf.matmul(probs, value), [0, 2, 1, 3]), [B, L, H])
        x = layer_norm(dense(context, f"{p}/attention/output/dense") + x, f"{p}/attention/output/LayerNorm")
        inner = dense(x, f"{p}/intermediate/dense")
        inner = inner * 0.5 * (1.0 + tf.math.erf(inner / tf.sqrt(2.0)))
        x = layer_norm(dense(inner, f"{p}/output/dense") + x, f"{p}/output/LayerNorm")
        hidden.append(x)
        attentions.append(probs)
    pooled = tf.tanh(dense(x[:, 0], "bert/pooler/dense"))
    t = dense(x, "cls/predictions/transform/dense")
    t = t * 0.5 * (1.0 + tf.math.erf(t / tf.sqrt(2.0)))
    t = layer_norm(t, "cls/predictions/transform/LayerNorm")
    mlm = tf.matmul(t, v["bert/embeddings/word_embeddings"], transpose_b=True) + v["cls/predictions/output_bias"]
    nsp = (
        tf.matmul(pooled, v["cls/seq_relationship/output_weights"], transpose_b=True)
        + v["cls/seq_relationship/output_bias"]
    )
    return hidden, attentions, pooled, mlm, nsp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "tests" / "data" / "uncased_L-2_H-32_A-4"
    parser.add_argument("--folder", default=str(default))
    args = parser.parse_args()

    import tensorflow as tf

    folder = Path(args.folder)
    config = json.loads((folder / "bert_config.json").read_text())
    reader = tf.train.load_checkpoint(str(folder / "bert_model.ckpt"))
    v = {
        name: tf.constant(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if not name.endswith(("adam_m", "adam_v")) and name != "global_step"
    }
    input_ids = np.array(INPUT_IDS, dtype=np.int64)
    token_type_ids = np.array(TOKEN_TYPE_IDS, dtype=np.int64)
    attention_mask = (input_ids != 0).astype(np.int64)
    hidden, attentions, pooled, mlm, nsp = forward(
        tf, v, config, tf.constant(input_ids), tf.constant(token_type_ids), tf.constant(attention_mask)
    )
    out = {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
        "pooler_output": pooled.numpy(),
        "mlm_logits": mlm.numpy(),
        "nsp_logits": nsp.numpy(),
    }
    out.update({f"hidden_states_{i}": h.numpy() for i, h in enumerate(hidden)})
    out.update({f"attentions_{i}": a.numpy() for i, a in enumerate(attentions)})
    np.savez_compressed(folder / "tf_forward.npz", **out)
    (folder / "tf_forward.json").write_text(
        json.dumps(
            {
                "made_by": "scripts/make_tf_reference.py: TensorFlow ops following google-research/bert modeling.py "
                "(modeling.py itself needs tf.contrib, which TensorFlow 2 lacks)",
                "tensorflow_version": tf.__version__,
                "mask": "additive -10000, as modeling.py",
                "tensors": sorted(out),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {folder / 'tf_forward.npz'} with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
