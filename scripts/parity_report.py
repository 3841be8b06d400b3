"""minibert against transformers on all-MiniLM-L6-v2 and on the full bert-base configuration, output by output.

    python scripts/parity_report.py [--model FOLDER ...] [--device cpu|cuda] [--dtype float32|float16|bfloat16]

A thin caller of `minibert parity` (minibert/tools/parity.py). Without --model it checks all-MiniLM-L6-v2 (real
weights) and bert-base shapes with random weights (transformers.BertForPreTraining, saved to a temporary
folder, so the pretraining heads are compared too).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

import torch

from minibert.formats.hub import default_model
from minibert.tools.parity import format_parity, parity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="a checkpoint folder (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model
        if not models:
            import transformers

            torch.manual_seed(1)
            transformers.BertForPreTraining(transformers.BertConfig()).save_pretrained(tmp)
            default = default_model()
            for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):  # bert-base-uncased's vocabulary
                shutil.copy(default / name, tmp)
            models = [str(default), tmp]
        for model in models:
            print(format_parity(parity(model, device=args.device, dtype=args.dtype)))
            print()


if __name__ == "__main__":
    main()
