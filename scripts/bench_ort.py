"""The `ort` case of scripts/bench.py: minibert against ONNX Runtime, the CPU engine fastembed runs.

all-MiniLM-L6-v2 (and bert-base with random weights) are exported from transformers with dynamic batch and
sequence axes, optimised as a deployment would (onnxruntime.transformers.optimizer, model_type bert:
fused attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization), and a copy is quantised
with dynamic int8 per channel. Needs `pip install onnxruntime onnx` (the `bench` extra), never a runtime
dependency of minibert.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch


def export(folder: Path, out: Path, int8: Path | None = None) -> dict:
    """transformers' BertModel of `folder` -> `out` (optimised ONNX) and `int8` (quantised copy of it)."""
    import onnx
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    model = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones(2, 8, dtype=torch.int64) for _ in names)
    raw = out.with_suffix(".raw.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(model),
            example,
            str(raw),
            input_names=names,
            output_names=["last_hidden_state"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]},
        )
        optimized = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=model.config.num_attention_heads,
            hidden_size=model.config.hidden_size,
        )
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(out))
        if int8 is not None:
            quantize_dynamic(
                str(out),
                str(int8),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    return fused


def session(path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtEncoder:
    """Mean-pooled, normalised sentence vectors from an ONNX model, as fastembed computes them, with the
    same length-sorted batches as minibert. `sessions` x `threads`: one session on every core, or one
    single-threaded session per core running batches side by side (minibert's own layout)."""

    def __init__(self, path, folder, sessions: int, threads: int, max_length: int = 256):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.sessions = [session(path, threads) for _ in range(sessions)]
        self.pool = ThreadPoolExecutor(sessions) if sessions > 1 else None

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

        def run(job):
            k, rows = job
            length = max(len(encodings[i].ids) for i in rows)
            feed = {
                name: np.zeros((len(rows), length), dtype=np.int64)
                for name in ("input_ids", "attention_mask", "token_type_ids")
            }
            for r, i in enumerate(rows):
                e = encodings[i]
                n = len(e.ids)
                feed["input_ids"][r, :n], feed["attention_mask"][r, :n], feed["token_type_ids"][r, :n] = (
                    e.ids,
                    e.attention_mask,
                    e.type_ids,
                )
            h = self.sessions[k % len(self.sessions)].run(None, feed)[0]
            m = feed["attention_mask"][:, :, None].astype(np.float32)
            v = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            return rows, v / np.linalg.norm(v, axis=1, keepdims=True)

        jobs = list(enumerate(batches))
        done = list(self.pool.map(run, jobs) if self.pool else map(run, jobs))
        out = np.empty((len(texts), done[0][1].shape[1]), dtype=np.float32)
        for rows, v in done:
            out[rows] = v
        return out


def agreement(v, ref):
    """Cosine min and mean of matching rows, and Spearman of the pairwise similarities."""
    from bench import spearman

    cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
    iu = np.triu_indices(len(v), 1)
    return float(cos.min()), float(cos.mean()), spearman((v @ v.T)[iu], (ref @ ref.T)[iu])


def short_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 3-12 common words: what queries look like."""
    from bench import SCALE_WORDS

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(SCALE_WORDS, size=rng.integers(3, 13))) for _ in range(n)]


ORT_COLD = """
import sys, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2] + "/tokenizer.json"); tok.enable_padding(); tok.enable_truncation(256)
texts = sys.argv[3:]
enc = tok.encode_batch(texts)
feed = {k: np.array([getattr(e, a) for e in enc], dtype=np.int64) for k, a in
        (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids"))}
h = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"]).run(None, feed)[0]
m = feed["attention_mask"][:, :, None]
v = (h * m).sum(1) / m.sum(1)
v /= np.linalg.norm(v, axis=1, keepdims=True)
print(np.round(v @ v.T, 2))
"""

FIVE = [
    "A man is eating food.",
    "A man eats a meal.",
    "The sky is blue today.",
    "It will rain tomorrow.",
    "Dogs bark at night.",
]


def gelu_apart(model, ids, apart: bool):
    from minibert.fast import cpu

    with cpu.override(fused_gelu=not apart):
        return model(ids)


def onnx_missing(case: str) -> bool:
    """Whether onnxruntime or onnx is missing, saying that `case` is skipped if so."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        print(f"\n## {case}: skipped (pip install onnxruntime onnx, the `bench` extra)")
        return True
    return False


def case_ort(args, tmp, results: dict):
    if onnx_missing("ort"):
        return
    import onnxruntime
    from bench import alternate, bert_base_folder, natural_sentences
    from bench_encode import make_corpus
    from sentence_transformers import SentenceTransformer

    from minibert import BertModel, Encoder
    from minibert.fast.cpu import features
    from minibert.fast.onednn import fuse_linear_layers
    from minibert.formats.hub import default_model
    from minibert.numpy_encoder import NumpyEncoder

    cpu = features()
    folder = default_model()
    f32_path, int8_path = tmp / "minilm.onnx", tmp / "minilm-int8.onnx"
    fused = export(folder, f32_path, int8_path)
    print(
        f"\n## ort: all-MiniLM-L6-v2, ONNX Runtime {onnxruntime.__version__} optimised ({fused}); "
        f"minibert on {cpu.describe()}"
    )

    f32 = Encoder.from_pretrained(folder)
    contenders = {
        "sentence-transformers float32": SentenceTransformer(str(folder), device="cpu"),
        "minibert float32": f32,
        "minibert float32 fast=False": Encoder.from_pretrained(folder, fast=False),
        "minibert int8": Encoder.from_pretrained(folder, quantize="int8"),
        "ORT float32, 1 session x 2 threads": OrtEncoder(f32_path, folder, 1, 2),
        "ORT float32, 2 sessions x 1 thread": OrtEncoder(f32_path, folder, 2, 1),
        "ORT int8, 1 session x 2 threads": OrtEncoder(int8_path, folder, 1, 2),
        "ORT int8, 2 sessions x 1 thread": OrtEncoder(int8_path, folder, 2, 1),
    }
    if cpu.native_bf16:  # bfloat16's target applies where the CPU computes in it; elsewhere it is slower
        contenders["minibert bfloat16"] = Encoder.from_pretrained(folder, dtype=torch.bfloat16)
    parts = args.ort_parts.split(",")
    rows = {}
    if "corpus" in parts:
        natural_corpus = make_corpus(f32.tokenizer, args.texts)
        sets = {"natural": natural_corpus, "short": short_texts(args.texts)}
        reference = {
            name: contenders["sentence-transformers float32"].encode(texts, batch_size=32)
            for name, texts in sets.items()
        }
        reference["432 sentences"] = contenders["sentence-transformers float32"].encode(natural_sentences())
        for set_name, texts in sets.items():
            out = {}
            fns = {
                who: (lambda e=e, who=who, out=out, texts=texts: out.__setitem__(who, e.encode(texts, batch_size=32)))
                for who, e in contenders.items()
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = alternate(fns, args.repeats)
            base = t["sentence-transformers float32"]
            print(f"\n{set_name}: {len(texts)} texts, batch 32, median of {args.repeats} interleaved rounds")
            print(f"{'':38}{'seconds':>8}{'vs ST':>7}{'vs mb f32':>10}{'cos min':>9}{'cos mean':>9}{'Spearman':>9}")
            for who, seconds in t.items():
                cmin, cmean, rho = agreement(out[who], reference[set_name])
                rows[f"{set_name}/{who}"] = dict(
                    seconds=seconds,
                    vs_st=base / seconds,
                    vs_minibert_f32=t["minibert float32"] / seconds,
                    cos_min=cmin,
                    cos_mean=cmean,
                    spearman=rho,
                )
                print(
                    f"{who:38}{seconds:8.2f}{base / seconds:6.2f}x{t['minibert float32'] / seconds:9.2f}x"
                    f"{cmin:9.4f}{cmean:9.4f}{rho:9.4f}"
                )
        print("\nagreement on the 432 natural sentences of scripts/data, against sentence-transformers float32:")
        for who, e in contenders.items():
            cmin, cmean, rho = agreement(e.encode(natural_sentences(), batch_size=32), reference["432 sentences"])
            rows[f"432/{who}"] = dict(cos_min=cmin, cos_mean=cmean, spearman=rho)
            print(f"{who:38}cos min {cmin:.4f}  mean {cmean:.4f}  Spearman {rho:.4f}")

    if "query" in parts:
        # One short query, batch 1: the latency a search box sees.
        query = "how do I reset my password"
        numpy_encoder = NumpyEncoder.from_pretrained(folder)
        single = {
            "sentence-transformers float32": lambda: contenders["sentence-transformers float32"].encode([query]),
            "minibert float32": lambda: f32.encode([query]),
            "minibert int8": lambda: contenders["minibert int8"].encode([query]),
            "minibert numpy backend": lambda: numpy_encoder.encode([query]),
            "ORT float32, 2 threads": lambda: contenders["ORT float32, 1 session x 2 threads"].encode([query]),
            "ORT float32, 1 thread": lambda: contenders["ORT float32, 2 sessions x 1 thread"].encode([query]),
            "ORT int8, 2 threads": lambda: contenders["ORT int8, 1 session x 2 threads"].encode([query]),
            "ORT int8, 1 thread": lambda: contenders["ORT int8, 2 sessions x 1 thread"].encode([query]),
        }
        lat = {who: [] for who in single}
        for fn in single.values():
            fn()
        for _ in range(args.queries):
            for who, fn in single.items():
                time.sleep(0.02)  # each starts from a quiet machine: ORT's and torch's idle threads spin a while
                start = time.perf_counter()
                fn()
                lat[who].append(time.perf_counter() - start)
        print(f"\none short query ({len(query.split())} words), batch 1, median of {args.queries} interleaved")
        for who, v in lat.items():
            print(f"{who:38}{statistics.median(v) * 1e3:8.2f} ms")
        rows["query_ms"] = {who: statistics.median(v) * 1e3 for who, v in lat.items()}

    if "cold" in parts:
        # Cold start: a new process that embeds five sentences and prints their similarities.
        cold = {
            "minibert similarity (auto: numpy)": [sys.executable, "-m", "minibert", "similarity", *FIVE],
            "minibert similarity --backend torch": [
                sys.executable,
                "-m",
                "minibert",
                "similarity",
                "--backend",
                "torch",
                *FIVE,
            ],
            "onnxruntime + tokenizers": [sys.executable, "-c", ORT_COLD, str(f32_path), str(folder), *FIVE],
        }
        cold_t = {who: [] for who in cold}
        for _ in range(args.repeats):
            for who, argv in cold.items():
                start = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                cold_t[who].append(time.perf_counter() - start)
        ort_cold = statistics.median(cold_t["onnxruntime + tokenizers"])
        print(f"\ncold start: a new process embeds five sentences, median of {args.repeats}")
        for who, v in cold_t.items():
            print(f"{who:38}{statistics.median(v):8.2f} s{statistics.median(v) / ort_cold:7.2f}x ORT's")
        rows["cold_s"] = {who: statistics.median(v) for who, v in cold_t.items()}

    if "dense" in parts:
        # bert-base, dense batches: the plain model, the fused fast path, transformers and ORT.
        base_folder = bert_base_folder(tmp)
        base_onnx = tmp / "bert-base.onnx"
        export(base_folder, base_onnx)
        import transformers

        plain = BertModel.from_pretrained(base_folder)
        fast = fuse_linear_layers(BertModel.from_pretrained(base_folder))
        hf = transformers.BertModel.from_pretrained(base_folder).eval()
        ort_base = session(base_onnx, 2)
        print(f"\nbert-base float32 (random weights), median of {args.dense_rounds} interleaved rounds")
        for B, L in ((1, 128), (8, 128)):
            ids = torch.randint(1000, 30000, (B, L))
            feed = {
                "input_ids": ids.numpy(),
                "attention_mask": np.ones((B, L), np.int64),
                "token_type_ids": np.zeros((B, L), np.int64),
            }
            with torch.inference_mode():
                t = alternate(
                    {
                        "minibert plain": lambda ids=ids: plain(ids),
                        "minibert fuse_linear_layers": lambda ids=ids: fast(ids),
                        "fused, GELU post-op": lambda ids=ids: gelu_apart(fast, ids, False),
                        "fused, GELU apart": lambda ids=ids: gelu_apart(fast, ids, True),
                        "transformers": lambda ids=ids: hf(ids),
                        "ORT optimised": lambda feed=feed: ort_base.run(None, feed),
                    },
                    args.dense_rounds,
                )
            rows[f"bert-base {B}x{L}"] = t
            print(
                f"{B}x{L}: "
                + ", ".join(f"{who} {s * 1e3:.1f} ms" for who, s in t.items())
                + f"; ORT / minibert plain {t['ORT optimised'] / t['minibert plain']:.2f}x, fused / plain "
                f"{t['minibert fuse_linear_layers'] / t['minibert plain']:.2f}x"
            )
    results["ort"] = rows
