"""Sentiment classification with BERT on CPU, in minutes: a frozen encoder with a linear head, and full
fine-tuning, on the short positive / negative sentences in scripts/data/.

    python scripts/finetune_classifier.py                      # both modes, all-MiniLM-L6-v2
    python scripts/finetune_classifier.py --mode full --epochs 3 --output-dir runs/sentiment

Each mode prints the training loss per epoch and the test accuracy, saves the model with
save_pretrained, loads it back and checks that the reloaded model predicts the same.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minibert import BertForSequenceClassification, Tokenizer
from minibert.formats.hub import default_model

DATA = Path(__file__).parent / "data"


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def batches(n: int, batch_size: int, shuffle: bool, rng: random.Random):
    order = list(range(n))
    if shuffle:
        rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def evaluate(model, tokenizer, texts, labels, batch_size=64) -> tuple[float, float, list[int]]:
    """Mean loss, accuracy and the predicted labels."""
    model.eval()
    losses, predictions = [], []
    with torch.no_grad():
        for rows in batches(len(texts), batch_size, False, random.Random(0)):
            out = model(**tokenizer([texts[i] for i in rows]), labels=torch.tensor([labels[i] for i in rows]))
            losses.append(out.loss.item() * len(rows))
            predictions += out.logits.argmax(-1).tolist()
    accuracy = sum(p == y for p, y in zip(predictions, labels)) / max(len(labels), 1)
    return sum(losses) / max(len(labels), 1), accuracy, predictions


def train(
    model,
    tokenizer,
    texts,
    labels,
    *,
    mode: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """Train in place; returns the mean training loss of each epoch."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if mode == "frozen":  # the encoder's weights stay as pretrained; only the classifier learns
        for p in model.bert.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    history = []
    for epoch in range(epochs):
        model.train()
        if mode == "frozen":
            model.bert.eval()  # no dropout inside a frozen encoder
        total = 0.0
        steps = batches(len(texts), batch_size, True, rng)
        for rows in tqdm(steps, desc=f"{mode} epoch {epoch + 1}/{epochs}", disable=not progress, file=sys.stderr):
            out = model(**tokenizer([texts[i] for i in rows]), labels=torch.tensor([labels[i] for i in rows]))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            total += out.loss.item() * len(rows)
        history.append(total / len(texts))
        print(f"{mode}: epoch {epoch + 1} train loss {history[-1]:.4f}")
    return history


def run(mode: str, args) -> float:
    train_texts, train_labels = read_tsv(DATA / "sentiment_train.tsv")
    test_texts, test_labels = read_tsv(DATA / "sentiment_test.tsv")
    folder = args.model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the classifier is new, as expected
        model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    print(
        f"{mode}: {len(train_texts)} training and {len(test_texts)} test sentences; "
        f"new weights: {', '.join(model.newly_initialized)}"
    )
    start = time.perf_counter()
    epochs = args.epochs or (20 if mode == "frozen" else 3)
    lr = args.lr or (1e-2 if mode == "frozen" else 5e-5)
    train(
        model,
        tokenizer,
        train_texts,
        train_labels,
        mode=mode,
        epochs=epochs,
        lr=lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    loss, accuracy, predictions = evaluate(model, tokenizer, test_texts, test_labels)
    print(
        f"{mode}: test loss {loss:.4f}, test accuracy {accuracy:.1%} "
        f"({time.perf_counter() - start:.0f} s of training and testing)"
    )

    with tempfile.TemporaryDirectory(prefix=f"minibert-{mode}-") as scratch:  # removed unless --output-dir
        out = Path(args.output_dir) / mode if args.output_dir else Path(scratch)
        model.save_pretrained(out)
        reloaded = BertForSequenceClassification.from_pretrained(out)
        _, reloaded_accuracy, reloaded_predictions = evaluate(reloaded, tokenizer, test_texts, test_labels)
        same = sum(a == b for a, b in zip(predictions, reloaded_predictions))
        saved = f"saved to {out}" if args.output_dir else "saved to a temporary folder (kept with --output-dir)"
        print(
            f"{mode}: {saved}; reloaded, it predicts the same label for {same} of {len(predictions)} test "
            f"sentences (accuracy {reloaded_accuracy:.1%})"
        )
    return accuracy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("frozen", "full", "both"), default="both")
    parser.add_argument("--model", help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=int, help="default: 20 frozen, 3 full")
    parser.add_argument("--lr", type=float, help="default: 1e-2 frozen, 5e-5 full")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir",
        help="keep the fine-tuned models here, one folder per mode (default: "
        "saved to a temporary folder to check the reload, then removed)",
    )
    args = parser.parse_args(argv)
    modes = ("frozen", "full") if args.mode == "both" else (args.mode,)
    results = {mode: run(mode, args) for mode in modes}
    print("test accuracy: " + ", ".join(f"{mode} {acc:.1%}" for mode, acc in results.items()))


if __name__ == "__main__":
    main()
