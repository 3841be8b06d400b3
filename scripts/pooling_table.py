"""The table in docs/walkthrough.md: how well each pooling of all-MiniLM-L6-v2 separates sentence pairs
that mean the same from pairs that do not.

    python scripts/pooling_table.py
"""

from __future__ import annotations

from minibert import Encoder

SAME = [
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("The girl is carrying a baby.", "A child is being carried by a girl."),
    ("A man is riding a horse.", "Someone rides a horse."),
    ("The cat sat on the mat.", "A cat is sitting on a rug."),
    ("It is raining heavily today.", "There is a lot of rain today."),
    ("The meeting was postponed until next week.", "They moved the meeting to next week."),
    ("She plays the violin beautifully.", "Her violin playing is lovely."),
    ("The train leaves at eight.", "The train departs at 8 o'clock."),
]
OTHER = [(a, SAME[(i + 3) % len(SAME)][1]) for i, (a, _) in enumerate(SAME)]  # the same sentences, mismatched


def main() -> None:
    encoder = Encoder.from_pretrained()
    print("| pooling | cosine, same meaning | cosine, different meaning | gap |")
    print("|---|---|---|---|")
    for pooling in ("mean", "cls", "pooler"):

        def cosines(pairs, pooling=pooling):
            a = encoder.encode([p[0] for p in pairs], pooling=pooling, normalize=True)
            b = encoder.encode([p[1] for p in pairs], pooling=pooling, normalize=True)
            return (a * b).sum(1)

        same, other = cosines(SAME), cosines(OTHER)
        print(f"| {pooling} | {same.mean():.3f} | {other.mean():.3f} | {same.mean() - other.mean():.3f} |")
    print(f"\n{len(SAME)} pairs each; 'different meaning' pairs each sentence with another pair's second sentence.")


if __name__ == "__main__":
    main()
