"""The family case of scripts/bench.py: MPNet, sentence-transformers' most downloaded model's architecture.

mpnet   all-mpnet-base-v2 (--mpnet FOLDER; else an MPNet of its shape with random weights) on the natural
        sentences of scripts/data and the generated corpus: minibert Encoder.encode against
        sentence-transformers' encode, float32, and bfloat16 where the CPU has native bf16; the largest
        difference of the vectors.
bias    what MPNet's relative-position bias costs: minibert's MPNet against a BERT of the same shape (the
        same weights where the two share them), float32, on the same corpus. The target: at most 10%.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from minibert.fast.cpu import features

BIAS_TARGET = 1.10


def random_mpnet(tmp, tokenizer_folder):
    """An MPNet of all-mpnet-base-v2's shape with random weights, mean pooling and normalisation, and a
    BERT of the same shape holding the same weights where the two share them."""
    import shutil

    import transformers
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    config = transformers.MPNetConfig(vocab_size=30527, max_position_embeddings=514, pad_token_id=1)
    transformers.MPNetModel(config).eval().save_pretrained(tmp / "mpnet-hf")
    for path in tokenizer_folder.iterdir():
        if path.is_file() and path.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(path, tmp / "mpnet-hf" / path.name)
    transformer = models.Transformer(str(tmp / "mpnet-hf"), max_seq_length=384)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(tmp / "mpnet"))
    return tmp / "mpnet"


def same_shape_bert(mpnet_folder, tmp):
    """A BERT folder of the MPNet's shape: its weights under BERT's names, token types zero, no bias; the
    MPNet's tokenizer and sentence-transformers settings."""
    import shutil

    from minibert import BertModel
    from minibert.config import BertConfig

    mpnet = BertModel.from_pretrained(mpnet_folder)
    values = {**mpnet.config.__dict__, "model_type": "bert", "type_vocab_size": 1}
    bert = BertModel(BertConfig(**values))
    state = {k: v for k, v in mpnet.state_dict().items() if k in bert.state_dict()}
    state["embeddings.token_type_embeddings.weight"] = torch.zeros_like(bert.embeddings.token_type_embeddings.weight)
    bert.load_state_dict(state, strict=True)
    shutil.copytree(mpnet_folder, tmp / "bert-shaped")
    (tmp / "bert-shaped" / "model.safetensors").unlink()
    bert.save_pretrained(tmp / "bert-shaped")
    return tmp / "bert-shaped"


def case_family(args, tmp, results: dict) -> None:
    from bench import alternate, natural_sentences
    from bench_encode import make_corpus
    from sentence_transformers import SentenceTransformer

    from minibert import Encoder
    from minibert.formats.hub import default_model

    folder = args.mpnet or random_mpnet(tmp, default_model())
    real = args.mpnet is not None
    st = SentenceTransformer(str(folder), device="cpu")
    ours = {"float32": Encoder.from_pretrained(folder)}
    if features().native_bf16:
        ours["bfloat16"] = Encoder.from_pretrained(folder, dtype=torch.bfloat16)
    name = "all-mpnet-base-v2" if real else "an MPNet of all-mpnet-base-v2's shape (random weights)"
    out = {"model": name}
    for label, texts in (
        ("natural", natural_sentences()),
        ("corpus", make_corpus(ours["float32"].tokenizer, args.texts)),
    ):
        got = {}
        fns = {
            f"minibert {k}": (lambda k=k, e=e, got=got, texts=texts: got.__setitem__(k, e.encode(texts)))
            for k, e in ours.items()
        }
        fns["sentence-transformers float32"] = lambda got=got, texts=texts: got.__setitem__(
            "st", st.encode(texts, batch_size=32)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = alternate(fns, args.repeats)
        base = seconds["sentence-transformers float32"]
        print(f"\n## family: {name}, {label}: {len(texts)} texts, batch 32")
        print(f"{'':32}{'seconds':>9}{'vs s-t':>9}{'max |diff|':>12}")
        rows = {}
        for contender, s in seconds.items():
            key = contender.split()[-1] if contender.startswith("minibert") else "st"
            diff = float(np.abs(got[key] - got["st"]).max())
            print(f"{contender:32}{s:9.3f}{base / s:8.2f}x{diff:12.1e}")
            rows[contender] = {"seconds": s, "speedup": base / s, "max_abs_diff": diff}
        out[label] = rows

    bert = Encoder.from_pretrained(same_shape_bert(folder, tmp))
    texts = make_corpus(ours["float32"].tokenizer, args.texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = alternate(
            {"mpnet": lambda: ours["float32"].encode(texts), "bert": lambda: bert.encode(texts)}, args.repeats
        )
    ratio = seconds["mpnet"] / seconds["bert"]
    verdict = "met" if ratio <= BIAS_TARGET else "NOT met"
    print(
        f"\nrelative-position bias: MPNet {seconds['mpnet']:.2f} s, the same-shape BERT {seconds['bert']:.2f} s: "
        f"{ratio:.3f}x (target <= {BIAS_TARGET}x, {verdict})"
    )
    out["bias"] = {**seconds, "ratio": ratio}
    results["family"] = out
