"""minibert against the reference implementations, side by side in one run.

    python scripts/bench.py [--cases dense,corpus,precision,memory,coldstart,scale,chunks,ort,small,gpu,serve,
                                     rerank,family] [--repeats 5] [--json out.json]

dense      full bert-base configuration (random weights), float32: minibert BertModel (oneDNN linear
           layers) vs transformers.BertModel (its default SDPA attention) at 1x128, 8x128, 32x128, 8x512;
           achieved GFLOP/s against a matrix-multiply roofline measured here, in this run
corpus     all-MiniLM-L6-v2 on a variable-length corpus: minibert Encoder.encode vs sentence-transformers
           encode vs plain transformers batches in input order (mean pooling), same batch size
precision  minibert bfloat16 and int8 (quantize="int8") against its own float32 on the corpus: speed,
           embedding cosine (min, mean), Spearman correlation of pairwise similarities; the same
           agreement figures on the natural sentences of scripts/data
memory     peak RSS of a fresh process that loads bert-base and encodes one batch, minus that of a
           process that only imports torch; minibert (plain, and with the Encoder's fast path, whose
           packed weights are a second copy) vs transformers, against the weights file's size
coldstart  a fresh process that embeds one sentence with the default model: minibert vs
           sentence-transformers, wall time
scale      a generated file of --scale-short short and --scale-long long lines (default 1M + 100k):
           `minibert embed -o DIR/` (shards, manifest) against the same stream with nothing written, and
           sentence-transformers' encode over the file in chunks of the same size, each a fresh process:
           throughput and peak RSS; and peak RSS at a tenth of the file against the whole
ort        (needs onnxruntime and onnx, the `bench` extra) all-MiniLM-L6-v2 exported and optimised for ONNX
           Runtime (float32, and dynamic int8 per channel) against minibert float32, int8 (bfloat16 where
           the CPU has native bf16) and sentence-transformers: natural and short corpora (seconds, cosine
           min/mean and Spearman against sentence-transformers), one short query at batch 1, cold start of
           a five-sentence similarity, and bert-base 1x128 and 8x128 (plain, fused, transformers, ORT);
           see scripts/bench_ort.py
small      (needs onnxruntime and onnx) small work against ONNX Runtime float32 and int8 in both thread
           layouts: one short query at batch 1 (queries 20 ms apart, alternating blocks of 20; median and
           p90) and --small-texts short texts at batch 32, minibert float32 (fast and plain), int8 and
           bfloat16 where the CPU has native bf16; cosine to minibert's plain float32; a line per target
           saying met or not; see scripts/bench_small.py
chunks     Encoder.encode against encode_stream at chunk sizes 64 to 4096 on the corpus: the chunk size that
           keeps encode's speed (texts are length-sorted within a chunk only)
gpu        (CUDA only; skipped without it) bert-base 256x128 in float16, bfloat16 and float32 with TF32
           off, minibert vs transformers in the same dtype, TFLOP/s against a matrix product's measured
           in the same dtype; and the corpus with all-MiniLM-L6-v2, Encoder.encode vs plain
           transformers batches
rerank     minibert's CrossEncoder.rank (1 query x 100 passages of 50-250 words) and SparseEncoder (1,000
           documents) against sentence-transformers' CrossEncoder and SparseEncoder, float32, bfloat16 where
           native and int8; see scripts/bench_rerank.py
family     all-mpnet-base-v2 (--mpnet FOLDER, else an MPNet of its shape) against sentence-transformers,
           float32 and bfloat16 where native; and MPNet's relative-position bias against a BERT of the same
           shape; see scripts/bench_family.py

Runs alternate between the contenders after a warm-up; each figure is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encode import make_corpus  # noqa: E402

from minibert import BertModel, Encoder  # noqa: E402
from minibert.fast.cpu import features, model_name  # noqa: E402
from minibert.fast.onednn import fuse_linear_layers, onednn_linear, pack_weight  # noqa: E402
from minibert.formats.hub import default_model  # noqa: E402

RESULTS: dict = {}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the runs interleaved so drift on a shared machine hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def roofline() -> float:
    """Best float32 GFLOP/s of a large matrix product here: the default BLAS, and oneDNN with the weight
    packed as minibert's fast path packs it."""
    x, w, b = torch.randn(2048, 768), torch.randn(3072, 768), torch.zeros(3072)
    flops = 2 * 2048 * 768 * 3072
    best = flops / median_time(lambda: torch.nn.functional.linear(x, w, b), 10)
    op = onednn_linear()
    if op is not None:
        packed = pack_weight(w)
        best = max(best, flops / median_time(lambda: op(x, packed, b, "none", [], ""), 10))
    return best / 1e9


def encoder_flops(config, B: int, L: int) -> float:
    H, I, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 2 * B * L * (4 * H * H + 2 * H * I) + 4 * B * L * L * H  # projections + QK^T and PV
    return layers * per_layer + 2 * B * H * H  # + pooler


def bert_base_folder(tmp: Path) -> Path:
    import transformers

    folder = tmp / "bert-base"
    if not folder.exists():
        torch.manual_seed(0)
        transformers.BertModel(transformers.BertConfig()).save_pretrained(folder)
    return folder


def case_dense(args, tmp):
    import transformers

    folder = bert_base_folder(tmp)
    ours = fuse_linear_layers(BertModel.from_pretrained(folder))
    theirs = transformers.BertModel.from_pretrained(folder).eval()  # default attention: SDPA
    peak = roofline()
    print(f"\n## dense: bert-base float32, roofline {peak:.0f} GFLOP/s (best matrix product measured here)")
    print(f"{'B x L':>8}{'minibert s':>12}{'HF s':>10}{'ratio':>8}{'tokens/s':>10}{'GFLOP/s':>9}{'% roof':>8}")
    rows = []
    for B, L in ((1, 128), (8, 128), (32, 128), (8, 512)):
        ids = torch.randint(1000, 30000, (B, L))
        with torch.inference_mode():
            t = alternate({"ours": lambda ids=ids: ours(ids), "theirs": lambda ids=ids: theirs(ids)}, args.repeats)
        gflops = encoder_flops(ours.config, B, L) / t["ours"] / 1e9
        row = dict(
            batch=B,
            length=L,
            minibert_s=t["ours"],
            transformers_s=t["theirs"],
            ratio=t["theirs"] / t["ours"],
            tokens_per_s=B * L / t["ours"],
            gflops=gflops,
            roofline_fraction=gflops / peak,
        )
        rows.append(row)
        print(
            f"{f'{B}x{L}':>8}{row['minibert_s']:12.4f}{row['transformers_s']:10.4f}{row['ratio']:8.2f}"
            f"{row['tokens_per_s']:10.0f}{gflops:9.0f}{gflops / peak:8.0%}"
        )
    RESULTS["dense"] = {"roofline_gflops": peak, "rows": rows}


def plain_transformers_encode(model, tokenizer, texts, batch_size, max_length, device="cpu"):
    """What a script written against transformers does: batches in input order, mean pooling."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            h = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            v = (h * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(v, dim=1))
    return torch.cat(out).cpu().numpy()


def case_corpus(args, tmp):
    import transformers
    from sentence_transformers import SentenceTransformer

    folder = str(default_model())
    ours = Encoder.from_pretrained(folder)
    st = SentenceTransformer(folder, device="cpu")
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.BertModel.from_pretrained(folder).eval()
    corpus = make_corpus(ours.tokenizer, args.texts)
    n_tokens = sum(len(e.ids) for e in ours.tokenizer.encode(corpus, max_length=256))
    results = {}
    fns = {
        "minibert": lambda: results.__setitem__("minibert", ours.encode(corpus, batch_size=32)),
        "sentence-transformers": lambda: results.__setitem__("st", st.encode(corpus, batch_size=32)),
        "transformers": lambda: results.__setitem__("hf", plain_transformers_encode(hf, hf_tok, corpus, 32, 256)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = alternate(fns, args.repeats)
    diff_st = float(np.abs(results["minibert"] - results["st"]).max())
    diff_hf = float(np.abs(results["minibert"] - results["hf"]).max())
    print(f"\n## corpus: all-MiniLM-L6-v2, {len(corpus)} texts, {n_tokens} tokens, batch size 32, float32")
    print(f"{'':24}{'seconds':>9}{'texts/s':>9}{'minibert is':>14}")
    for name, seconds in t.items():
        print(f"{name:24}{seconds:9.2f}{len(corpus) / seconds:9.1f}{t[name] / t['minibert']:13.2f}x")
    print(f"max abs diff of embeddings: vs sentence-transformers {diff_st:.1e}, vs transformers {diff_hf:.1e}")
    RESULTS["corpus"] = {
        "texts": len(corpus),
        "tokens": n_tokens,
        "seconds": t,
        "max_abs_diff_st": diff_st,
        "max_abs_diff_transformers": diff_hf,
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.argsort().argsort().astype(float), b.argsort().argsort().astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def natural_sentences() -> list[str]:
    """The 432 short review sentences of scripts/data, a second, natural test set for reduced precision."""
    data = Path(__file__).parent / "data"
    return [
        line.split("\t", 1)[1]
        for name in ("sentiment_train.tsv", "sentiment_test.tsv")
        for line in (data / name).read_text(encoding="utf-8").splitlines()[1:]
    ]


def case_precision(args, tmp):
    folder = default_model()
    f32 = Encoder.from_pretrained(folder)
    bf16 = Encoder.from_pretrained(folder, dtype=torch.bfloat16)
    int8 = Encoder.from_pretrained(folder, quantize="int8")
    corpus = make_corpus(f32.tokenizer, min(args.texts, 500), seed=1)
    vectors = {}
    fns = {
        name: (lambda e=e, name=name: vectors.__setitem__(name, e.encode(corpus)))
        for name, e in (("float32", f32), ("bfloat16", bf16), ("int8", int8))
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = alternate(fns, args.repeats)
    natural = natural_sentences()
    natural_vectors = {name: e.encode(natural) for name, e in (("float32", f32), ("bfloat16", bf16), ("int8", int8))}

    def agreement(v, ref):
        cos = (v * ref).sum(1)
        iu = np.triu_indices(len(v), 1)
        return float(cos.min()), float(cos.mean()), spearman((v @ v.T)[iu], (ref @ ref.T)[iu])

    print(
        f"\n## precision: all-MiniLM-L6-v2 on CPU, {len(corpus)} corpus texts (timed), {len(natural)} natural sentences"
    )
    print(
        f"{'':10}{'seconds':>9}{'speed-up':>10}{'cos min':>9}{'cos mean':>9}{'Spearman':>10}"
        f"  | natural:{'cos min':>8}{'cos mean':>9}{'Spearman':>10}"
    )
    rows = {}
    for name, v in vectors.items():
        cos_min, cos_mean, rho = agreement(v, vectors["float32"])
        n_min, n_mean, n_rho = agreement(natural_vectors[name], natural_vectors["float32"])
        rows[name] = dict(
            seconds=t[name],
            speedup=t["float32"] / t[name],
            cos_min=cos_min,
            cos_mean=cos_mean,
            spearman=rho,
            natural_cos_min=n_min,
            natural_cos_mean=n_mean,
            natural_spearman=n_rho,
        )
        print(
            f"{name:10}{t[name]:9.2f}{t['float32'] / t[name]:9.2f}x{cos_min:9.4f}{cos_mean:9.4f}{rho:10.4f}"
            f"  | {'':8}{n_min:8.4f}{n_mean:9.4f}{n_rho:10.4f}"
        )
    RESULTS["precision"] = rows


# VmHWM, the peak resident set of this process image: unlike ru_maxrss it starts afresh at exec, so the
# benchmark's own memory (inherited through fork) does not count.
PEAK_RSS = """
import sys, torch
if sys.argv[1] != "baseline":
    ids = torch.randint(1000, 30000, (8, 128))
    if sys.argv[1].startswith("minibert"):
        from minibert import BertModel
        from minibert.fast.onednn import fuse_linear_layers
        model = BertModel.from_pretrained(sys.argv[2])
        if sys.argv[1] == "minibert, fast path":  # as Encoder runs it: packed weights, a second copy
            model = fuse_linear_layers(model)
    else:
        import transformers
        model = transformers.BertModel.from_pretrained(sys.argv[2]).eval()
    with torch.inference_mode():
        model(ids)
print([int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def case_memory(args, tmp):
    folder = bert_base_folder(tmp)
    size = (folder / "model.safetensors").stat().st_size

    def peak(who):
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, who, str(folder)], capture_output=True, text=True, check=True
        )
        return int(out.stdout.split()[-1])

    base = statistics.median(peak("baseline") for _ in range(3))
    rows = {
        who: statistics.median(peak(who) for _ in range(3)) - base
        for who in ("minibert", "minibert, fast path", "transformers")
    }
    print(
        f"\n## memory: bert-base, load + one 8x128 batch; weights file {size / 2**20:.0f} MiB; "
        f"peak RSS above `import torch` ({base / 2**20:.0f} MiB)"
    )
    for who, extra in rows.items():
        print(f"{who:20}{extra / 2**20:8.0f} MiB{extra / size:8.2f}x the weights file")
    RESULTS["memory"] = {"weights_bytes": size, "baseline_bytes": base, "extra_bytes": rows}


COLD = {
    "minibert": "from minibert import Encoder; Encoder.from_pretrained().encode('A first sentence.')",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer; "
    f"SentenceTransformer({str(default_model())!r}, device='cpu').encode('A first sentence.')",
}


def case_coldstart(args, tmp):
    def once(code):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        return time.perf_counter() - start

    t = {who: [] for who in COLD}
    for _ in range(args.repeats):
        for who, code in COLD.items():
            t[who].append(once(code))
    t = {who: statistics.median(v) for who, v in t.items()}
    print("\n## cold start: a new process embeds one sentence with all-MiniLM-L6-v2")
    for who, seconds in t.items():
        print(f"{who:24}{seconds:8.2f} s{seconds / t['sentence-transformers']:8.2f}x sentence-transformers'")
    RESULTS["coldstart"] = t


def matmul_peak(device, dtype) -> float:
    """Best FLOP/s of a large square matrix product on this device in this dtype: the dense peak the
    encoder is measured against (TF32 as the caller set it)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_time(synced(lambda: a @ b, device), 10)


def synced(fn, device):
    """fn, made to wait for the GPU to finish, so that wall time measures the work."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize())


def case_gpu(args, tmp, device=None, shape=(256, 128)):
    device = torch.device(device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("\n## gpu: no CUDA device here; skipped")
        RESULTS["gpu"] = None
        return
    folder, (B, L) = bert_base_folder(tmp), shape
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # float32 is float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"\n## gpu: {name}, bert-base {B}x{L}, minibert vs transformers (SDPA) in the same dtype")
    print(
        f"{'dtype':>10}{'minibert s':>12}{'HF s':>10}{'ratio':>8}{'tokens/s':>11}{'TFLOP/s':>9}"
        f"{'matmul peak':>13}{'% peak':>8}"
    )
    try:
        dense = {
            str(dtype).removeprefix("torch."): gpu_dense(folder, dtype, device, B, L, args.repeats)
            for dtype in (torch.float16, torch.bfloat16, torch.float32)
        }
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    print(
        f"\n## gpu corpus: all-MiniLM-L6-v2, {args.texts} texts, Encoder.encode vs plain transformers "
        f"batches, batch size {args.gpu_batch}"
    )
    corpus = {
        str(dtype).removeprefix("torch."): gpu_corpus(args, dtype, device) for dtype in (torch.float16, torch.bfloat16)
    }
    RESULTS["gpu"] = {"device": name, "dense": dense, "corpus": corpus}


def gpu_dense(folder, dtype, device, B, L, repeats) -> dict:
    import transformers

    ours = BertModel.from_pretrained(folder, device=device, dtype=dtype)
    theirs = transformers.BertModel.from_pretrained(folder, dtype=dtype).to(device).eval()
    ids = torch.randint(1000, 30000, (B, L), device=device)
    with torch.inference_mode():
        t = alternate(
            {"ours": synced(lambda: ours(ids), device), "theirs": synced(lambda: theirs(ids), device)}, repeats
        )
    peak = matmul_peak(device, dtype) / 1e12
    tflops = encoder_flops(ours.config, B, L) / t["ours"] / 1e12
    print(
        f"{str(dtype).removeprefix('torch.'):>10}{t['ours']:12.4f}{t['theirs']:10.4f}{t['theirs'] / t['ours']:8.2f}"
        f"{B * L / t['ours']:11.0f}{tflops:9.1f}{peak:13.1f}{tflops / peak:8.0%}"
    )
    return dict(
        minibert_s=t["ours"],
        transformers_s=t["theirs"],
        ratio=t["theirs"] / t["ours"],
        tokens_per_s=B * L / t["ours"],
        tflops=tflops,
        matmul_peak_tflops=peak,
    )


def gpu_corpus(args, dtype, device) -> dict:
    import transformers

    folder = str(default_model())
    ours = Encoder.from_pretrained(folder, device=device, dtype=dtype)
    hf = transformers.BertModel.from_pretrained(folder, dtype=dtype).to(device).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    corpus = make_corpus(ours.tokenizer, args.texts)
    out = {}
    fns = {
        "minibert": lambda: out.__setitem__("ours", ours.encode(corpus, batch_size=args.gpu_batch)),
        "transformers": lambda: out.__setitem__(
            "hf", plain_transformers_encode(hf, hf_tok, corpus, args.gpu_batch, 256, device)
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = alternate({k: synced(fn, device) for k, fn in fns.items()}, args.repeats)
    cosine = float((out["ours"] * out["hf"]).sum(1).min())
    print(
        f"{str(dtype).removeprefix('torch.'):>10}  minibert {t['minibert']:.3f} s, transformers "
        f"{t['transformers']:.3f} s, {t['transformers'] / t['minibert']:.2f}x; cosine between them min {cosine:.4f}"
    )
    return dict(
        minibert_s=t["minibert"],
        transformers_s=t["transformers"],
        ratio=t["transformers"] / t["minibert"],
        min_cosine=cosine,
    )


SCALE_WORDS = (
    "the a an model reads every token of each sentence and writes one vector for it river town "
    "market committee budget spring meeting morning evening quickly slowly"
).split()

# Streams the file through Encoder.encode_stream and discards the vectors: the same work as `embed -o DIR/`
# without shards, manifest or ids.
STREAM_ONLY = """
import sys
from minibert import Encoder
encoder = Encoder.from_pretrained()
lines = (line.rstrip(chr(10)) for line in open(sys.argv[1], encoding="utf-8"))
for _ in encoder.encode_stream(lines, chunk_size=int(sys.argv[2])):
    pass
"""
ST_CHUNKS = """
import sys, itertools
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[3], device="cpu")
lines = (line.rstrip(chr(10)) for line in open(sys.argv[1], encoding="utf-8"))
while chunk := list(itertools.islice(lines, int(sys.argv[2]))):
    model.encode(chunk, batch_size=32)
"""


def scale_file(path: Path, short: int, long: int, seed: int = 0) -> Path:
    """`short` lines of 3-12 words and `long` lines of 150-250 words, shuffled, written once."""
    rng = np.random.default_rng(seed)
    kinds = rng.permutation(np.r_[np.zeros(short, bool), np.ones(long, bool)])
    with open(path, "w", encoding="utf-8") as f:
        for is_long in kinds:
            n = rng.integers(150, 251) if is_long else rng.integers(3, 13)
            f.write(" ".join(rng.choice(SCALE_WORDS, size=n)) + "\n")
    return path


def timed_process(argv) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{argv[:4]} failed: {process.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss * 1024


def case_scale(args, tmp):
    chunk = args.chunk_size
    big = scale_file(tmp / "scale.txt", args.scale_short, args.scale_long)
    lines = args.scale_short + args.scale_long
    small = tmp / "scale_small.txt"
    with open(big, encoding="utf-8") as src, open(small, "w", encoding="utf-8") as dst:
        for _, line in zip(range(lines // 10), src):
            dst.write(line)
    runs = {who: [] for who in args.scale_with.split(",")}
    for r in range(args.repeats):
        for who in runs:
            if who == "shards":
                argv = [
                    sys.executable,
                    "-m",
                    "minibert",
                    "embed",
                    str(big),
                    "-o",
                    f"{tmp / f'v{r}'}/",
                    "--chunk-size",
                    str(chunk),
                ]
            elif who == "stream":
                argv = [sys.executable, "-c", STREAM_ONLY, str(big), str(chunk)]
            else:
                argv = [sys.executable, "-c", ST_CHUNKS, str(big), str(chunk), str(default_model())]
            runs[who].append(timed_process(argv))
    small_rss = statistics.median(
        timed_process(
            [
                sys.executable,
                "-m",
                "minibert",
                "embed",
                str(small),
                "-o",
                f"{tmp / f's{r}'}/",
                "--chunk-size",
                str(chunk),
            ]
        )[1]
        for r in range(args.repeats)
    )
    seconds = {who: statistics.median(t for t, _ in v) for who, v in runs.items()}
    rss = {who: statistics.median(m for _, m in v) for who, v in runs.items()}
    print(f"\n## scale: {args.scale_short} short + {args.scale_long} long lines, chunks of {chunk}, all-MiniLM-L6-v2")
    for who in runs:
        print(f"{who:24}{seconds[who]:9.1f} s{lines / seconds[who]:9.1f} texts/s  peak RSS {rss[who] / 2**20:7.0f} MiB")
    if "stream" in runs:
        print(
            f"sharded output and its bookkeeping cost {seconds['shards'] / seconds['stream'] - 1:+.1%} "
            "against the bare stream"
        )
    if "sentence-transformers" in runs:
        print(f"minibert {seconds['sentence-transformers'] / seconds['shards']:.2f}x sentence-transformers")
    print(
        f"peak RSS at {lines // 10} lines {small_rss / 2**20:.0f} MiB, at {lines} lines "
        f"{rss['shards'] / 2**20:.0f} MiB: {rss['shards'] / small_rss - 1:+.1%}"
    )
    RESULTS["scale"] = {"lines": lines, "seconds": seconds, "peak_rss": rss, "peak_rss_tenth": small_rss}


def case_chunks(args, tmp):
    encoder = Encoder.from_pretrained()
    corpus = make_corpus(encoder.tokenizer, args.texts)
    sizes = (64, 256, 1024, 4096)

    def stream(size):
        return np.concatenate([v for _, v in encoder.encode_stream(iter(corpus), chunk_size=size)])

    fns = {"encode": lambda: encoder.encode(corpus)} | {
        f"encode_stream, chunks of {n}": (lambda n=n: stream(n)) for n in sizes
    }
    t = alternate(fns, args.repeats)
    print(f"\n## chunks: all-MiniLM-L6-v2, {len(corpus)} corpus texts, encode against encode_stream")
    for name, seconds in t.items():
        print(f"{name:32}{seconds:8.2f} s{t['encode'] / seconds:8.2f}x encode's speed")
    RESULTS["chunks"] = t


def case_ort(args, tmp):
    from bench_ort import case_ort

    case_ort(args, tmp, RESULTS)


def case_small(args, tmp):
    from bench_small import case_small

    case_small(args, tmp, RESULTS)


def case_rerank(args, tmp):
    from bench_rerank import case_rerank

    case_rerank(args, tmp, RESULTS)


def case_family(args, tmp):
    from bench_family import case_family

    case_family(args, tmp, RESULTS)


def case_serve(args, tmp):
    from bench_serve import case_serve

    case_serve(args, tmp, RESULTS)


CASES = {
    "dense": case_dense,
    "corpus": case_corpus,
    "precision": case_precision,
    "memory": case_memory,
    "coldstart": case_coldstart,
    "gpu": case_gpu,
    "scale": case_scale,
    "ort": case_ort,
    "small": case_small,
    "chunks": case_chunks,
    "serve": case_serve,
    "rerank": case_rerank,
    "family": case_family,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--texts", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--gpu-batch", type=int, default=128, help="batch size of the gpu corpus case (default 128)")
    parser.add_argument("--scale-short", type=int, default=1_000_000, help="scale case: short lines (1M)")
    parser.add_argument("--scale-long", type=int, default=100_000, help="scale case: long lines (100k)")
    parser.add_argument("--chunk-size", type=int, default=4096, help="scale case: rows per chunk (4096)")
    parser.add_argument(
        "--scale-with",
        default="shards,stream,sentence-transformers",
        help="scale case: contenders besides the RSS check, from shards (always), stream, sentence-transformers",
    )
    parser.add_argument("--queries", type=int, default=200, help="ort case: single-query rounds (200)")
    parser.add_argument(
        "--ort-parts",
        default="corpus,query,cold,dense",
        help="ort case: which parts, from corpus, query, cold, dense (all)",
    )
    parser.add_argument("--small-queries", type=int, default=200, help="small case: queries per contender (200)")
    parser.add_argument("--small-texts", type=int, default=3000, help="small case: short texts (3000)")
    parser.add_argument("--dense-rounds", type=int, default=20, help="ort case: bert-base rounds (20)")
    parser.add_argument("--serve-seconds", type=float, default=20.0, help="serve case: seconds per load (20)")
    parser.add_argument("--serve-rounds", type=int, default=3, help="serve case: alternating rounds per load (3)")
    parser.add_argument("--serve-soak", type=float, default=600.0, help="serve case: soak seconds, 0 for none (600)")
    parser.add_argument(
        "--serve-with",
        default="minibert,infinity-emb,sentence-transformers",
        help="serve case: servers, from minibert, infinity-emb, sentence-transformers",
    )
    parser.add_argument(
        "--infinity-python",
        metavar="PYTHON",
        help="serve case: a python with infinity-emb "
        "installed (pip install 'infinity-emb[server,torch,optimum]' in a virtual environment)",
    )
    parser.add_argument("--rerank-passages", type=int, default=100, help="rerank case: passages per query (100)")
    parser.add_argument("--sparse-docs", type=int, default=1000, help="rerank case: SPLADE documents (1000)")
    parser.add_argument("--mpnet", type=Path, metavar="FOLDER", help="family case: all-mpnet-base-v2's folder")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    if "shards" not in args.scale_with.split(","):
        args.scale_with = "shards," + args.scale_with
    if unknown := set(args.scale_with.split(",")) - {"shards", "stream", "sentence-transformers"}:
        parser.error(f"unknown --scale-with contender {sorted(unknown)[0]!r}")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")

    import transformers

    transformers.logging.set_verbosity_error()
    cpu = f"{model_name()}, {features().describe()}"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    header = dict(
        machine=platform.machine(),
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        device=device,
        cpu=cpu,
    )
    print("# " + ", ".join(f"{k} {v}" for k, v in header.items()))
    RESULTS["machine"] = header
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            CASES[case](args, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2) + "\n")


if __name__ == "__main__":
    main()
