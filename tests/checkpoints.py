"""Checkpoints with random weights saved in the layouts real rerankers, classifiers and SPLADE models ship in,
with MiniLM's real tokenizer: the fixtures in conftest.py build them once a session."""

from __future__ import annotations

import shutil

import torch
from reference import randomize_

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def copy_tokenizer(minilm_dir, folder) -> None:
    for name in TOKENIZER_FILES:
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, folder / name)


def small_bert(minilm_dir, tmp_path, **config):
    """A random BertForSequenceClassification the size of a small test model, with MiniLM's real tokenizer."""
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(vocab_size=30522, attn_implementation="eager", **SMALL, **config)
    ).eval()
    randomize_(model)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    copy_tokenizer(minilm_dir, folder)
    return folder, model


def cross_encoder(minilm_dir, tmp):
    """Saved as cross-encoder/ms-marco-MiniLM-L-6-v2 is: one label, with sentence-transformers' CrossEncoder
    entry in config.json (an Identity activation: raw logits)."""
    from sentence_transformers import CrossEncoder as Reference

    folder, _ = small_bert(minilm_dir, tmp, num_labels=1)
    reference = Reference(str(folder), device="cpu", activation_fn=torch.nn.Identity())
    reference.save(str(tmp / "ce"))
    return tmp / "ce"


def splade(minilm_dir, tmp):
    """A random BertForMaskedLM saved as a sentence-transformers SparseEncoder (MLMTransformer, SpladePooling)."""
    import transformers
    from sentence_transformers.sparse_encoder import SparseEncoder as Reference
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=30522, **SMALL)).eval()
    randomize_(model)
    model.save_pretrained(tmp / "mlm")
    copy_tokenizer(minilm_dir, tmp / "mlm")
    transformer = MLMTransformer(str(tmp / "mlm"), max_seq_length=128)
    Reference(modules=[transformer, SpladePooling(pooling_strategy="max")], device="cpu").save(str(tmp / "st"))
    return tmp / "st"


# Text in several scripts for training and checking tokenizers: Latin, CJK, Cyrillic, Arabic, emoji.
SCRIPTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Rivers carry trade and water to the towns built on their banks; café, naïve, résumé.",
    "川は町に水と交易を運ぶ。東京の天気は晴れです。",
    "河流把水和贸易带到岸边的城镇。今天天气很好。",
    "Реки несут воду и торговлю в города на их берегах.",
    "الأنهار تحمل الماء والتجارة إلى المدن المبنية على ضفافها.",
    "Emoji 🙂🚀🌍 and symbols: 42% of €100 = €42 — «quotes» ‘single’.",
    "  leading and trailing spaces, tabs\tand\nnewlines  ",
]


def multilingual_texts(n: int = 300, seed: int = 0) -> list[str]:
    """`n` texts of shuffled words and runs of characters from SCRIPTS, a few hundred characters at most."""
    import random

    rng = random.Random(seed)
    words = [w for line in SCRIPTS for w in line.split()] + [c for line in SCRIPTS[2:4] for c in line]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 30))) for _ in range(n)]


# The special tokens of RoBERTa's kind of tokenizer (XLM-R, MPNet too), as transformers' classes take them.
ROBERTA_SPECIALS = dict(
    bos_token="<s>",
    eos_token="</s>",
    sep_token="</s>",
    cls_token="<s>",
    unk_token="<unk>",
    pad_token="<pad>",
    mask_token="<mask>",
)


def trained_tokenizer(kind: str, folder):
    """A tokenizer of XLM-R's kind (SentencePiece Unigram, `kind="unigram"`) or RoBERTa's (byte-level BPE,
    `kind="bpe"`), trained here by `tokenizers` and saved by transformers' own fast tokenizer class, with
    its <s> A </s></s> B </s> template and special tokens. Returns the transformers tokenizer."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    corpus = SCRIPTS * 20 + multilingual_texts(400, seed=1)
    if kind == "unigram":
        backend = Tokenizer(models.Unigram())
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=specials, unk_token="<unk>")
        backend.train_from_iterator(corpus, trainer)
        backend.add_special_tokens(["<mask>"])
        wrapper = transformers.XLMRobertaTokenizerFast
    else:
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        backend.train_from_iterator(corpus, trainer)
        backend.add_special_tokens(["<mask>"])
        wrapper = transformers.RobertaTokenizerFast
    tokenizer = wrapper(tokenizer_object=backend, **ROBERTA_SPECIALS, model_max_length=512)
    tokenizer.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)
