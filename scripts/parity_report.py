"""Largest absolute difference between minibert and transformers, output by output.

    python scripts/parity_report.py [--model FOLDER ...] [--device cpu|cuda] [--dtype float32|float16|bfloat16]

Without --model it checks all-MiniLM-L6-v2 (real weights) and the full bert-base configuration with
random weights (transformers.BertForPreTraining, saved and reloaded). Each row is one output: the
hidden states and attention maps at real (unpadded) tokens, every layer's worst; "fused" is minibert's
scaled_dot_product_attention path, "explicit" the path that returns attention maps. The reference is
transformers.BertModel with eager attention in the same dtype; TF32 is off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from parity import max_abs_diffs  # noqa: E402

from minibert import BertModel, Tokenizer  # noqa: E402
from minibert.hub import default_model  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT reads a sentence in both directions at once, and every layer refines each token's vector.",
    "Short one.",
    "Café au lait, naïve façade; déjà vu!",
    "春眠不觉晓，处处闻啼鸟。",
    "",
]


def report(name, folder, tokenizer_folder, device, dtype):
    import transformers

    ours = BertModel.from_pretrained(folder, device=device, dtype=dtype)
    ref = transformers.BertModel.from_pretrained(folder, attn_implementation="eager", dtype=dtype).to(device).eval()
    batch = {k: v.to(device) for k, v in Tokenizer.from_pretrained(tokenizer_folder)(SENTENCES).items()}
    with torch.no_grad():
        expected = ref(**batch, output_hidden_states=True, output_attentions=True)
        explicit = max_abs_diffs(ours(**batch, output_hidden_states=True, output_attentions=True), expected,
                                 batch["attention_mask"])
        fused = max_abs_diffs(ours(**batch, output_hidden_states=True), expected, batch["attention_mask"])
    print(f"\n{name}  ({device}, {str(dtype).removeprefix('torch.')}, batch {tuple(batch['input_ids'].shape)})")
    print(f"{'output':20}{'fused':>12}{'explicit':>12}")
    for key in explicit:
        f = f"{fused[key]:.2e}" if key in fused else "-"
        print(f"{key:20}{f:>12}{explicit[key]:>12.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model folder (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    dtype = getattr(torch, args.dtype)
    warnings.simplefilter("ignore")
    import transformers

    transformers.logging.set_verbosity_error()  # its load report lists the cls.* keys BertModel leaves out
    if args.model:
        for folder in args.model:
            report(folder, folder, folder, args.device, dtype)
        return
    minilm = default_model()
    report("all-MiniLM-L6-v2", minilm, minilm, args.device, dtype)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.BertForPreTraining(transformers.BertConfig()).save_pretrained(tmp)
        report("bert-base config, random weights", tmp, minilm, args.device, dtype)


if __name__ == "__main__":
    main()
