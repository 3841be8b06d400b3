"""BERT's relatives (RoBERTa, XLM-RoBERTa, CamemBERT, MPNet) against transformers (eager attention): random
weights saved in each family's real layout, small and base-sized, with tokenizers of the real kinds
(SentencePiece Unigram, byte-level BPE) trained here by `tokenizers`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from checkpoints import ROBERTA_SPECIALS, multilingual_texts, trained_tokenizer
from reference import assert_both_paths_match, randomize_

from minibert import BertModel, Encoder
from minibert.relatives import DistilBertModel, ElectraModel, MPNetModel, PaddedPositionsModel
from minibert.tokenizer import Tokenizer

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
FAMILIES = {  # model_type -> (transformers config class, model class, tokenizer kind, minibert class)
    "roberta": ("RobertaConfig", "RobertaModel", "bpe", PaddedPositionsModel),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", "unigram", PaddedPositionsModel),
    "camembert": ("CamembertConfig", "CamembertModel", "unigram", PaddedPositionsModel),
    "mpnet": ("MPNetConfig", "MPNetModel", "bpe", MPNetModel),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "bpe", DistilBertModel),
    "electra": ("ElectraConfig", "ElectraModel", "bpe", ElectraModel),
}


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory):
    """A folder per tokenizer kind, and transformers' fast tokenizer for it."""
    tmp = tmp_path_factory.mktemp("tokenizers")
    return {kind: (tmp / kind, trained_tokenizer(kind, tmp / kind)) for kind in ("unigram", "bpe")}


def saved_family(family: str, folder, tokenizer_folder=None, **sizes):
    """A random transformers model of `family`, LayerNorms randomised, saved to `folder` (with a tokenizer)."""
    import transformers

    config_class, model_class, _, _ = FAMILIES[family]
    settings = dict(vocab_size=640, max_position_embeddings=70, pad_token_id=1, **(sizes or SMALL))
    if family in ("roberta", "xlm-roberta", "camembert"):
        settings["type_vocab_size"] = 1
    if family == "electra":
        settings["embedding_size"] = settings["hidden_size"] // 2  # ELECTRA-small's narrower embeddings
    if family == "distilbert":  # its own names for the same fields
        names = dict(hidden_size="dim", num_hidden_layers="n_layers", num_attention_heads="n_heads")
        settings = {names.get(k, "hidden_dim" if k == "intermediate_size" else k): v for k, v in settings.items()}
    config = getattr(transformers, config_class)(**settings, attn_implementation="eager")
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    randomize_(model)
    model.save_pretrained(folder)
    if tokenizer_folder is not None:
        copy_files(tokenizer_folder, folder)
    return model


def copy_files(source, folder) -> None:
    """Every file of `source` (a tokenizer's) into `folder`."""
    import shutil

    for path in source.iterdir():
        shutil.copy(path, folder / path.name)


def xlmr_cross_encoder(tokenizers_dir, tmp_path, seed: int):
    """A random XLM-R cross-encoder (one label) in bge-reranker-base's layout, saved by sentence-transformers'
    CrossEncoder (max length 60), with the Unigram tokenizer."""
    import transformers
    from sentence_transformers import CrossEncoder as Reference

    saved_family("xlm-roberta", tmp_path / "base", tokenizers_dir["unigram"][0])
    torch.manual_seed(seed)
    model = transformers.XLMRobertaForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=1)
    randomize_(model)
    model.save_pretrained(tmp_path / "hf")
    copy_files(tokenizers_dir["unigram"][0], tmp_path / "hf")
    Reference(str(tmp_path / "hf"), device="cpu", max_length=60).save(str(tmp_path / "ce"))
    return tmp_path / "ce"


def batch_of(hf_tokenizer, texts, pairs=None, **kwargs):
    batch = hf_tokenizer(texts, pairs, padding=True, return_tensors="pt", **kwargs)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_output_matches_transformers(family, tokenizers_dir, tmp_path):
    kind = FAMILIES[family][2]
    folder, hf_tokenizer = tokenizers_dir[kind]
    reference = saved_family(family, tmp_path / family, folder)
    texts = multilingual_texts(6, seed=3)
    batch = batch_of(hf_tokenizer, texts, texts[::-1], truncation=True, max_length=60)
    eager = BertModel.from_pretrained(tmp_path / family, attention="eager")
    assert type(eager) is FAMILIES[family][3]
    assert_both_paths_match(eager, reference, batch)
    if family not in ("mpnet",):  # the same operations as transformers' eager attention: the same bits
        with torch.no_grad():
            want = reference(**batch, output_hidden_states=True).hidden_states
            got = eager(**batch, output_hidden_states=True).hidden_states
        keep = batch["attention_mask"].bool()
        assert all(torch.equal(a[keep], b[keep]) for a, b in zip(got, want))
    assert_both_paths_match(BertModel.from_pretrained(tmp_path / family), reference, batch)


@pytest.mark.parametrize("family", ["mpnet", "roberta", "distilbert", "electra"])
def test_base_sized_models_match_transformers(family, tokenizers_dir, tmp_path):
    sizes = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    reference = saved_family(family, tmp_path / family, **sizes)
    _, hf_tokenizer = tokenizers_dir["bpe"]
    batch = batch_of(hf_tokenizer, multilingual_texts(3, seed=5), truncation=True, max_length=64)
    assert_both_paths_match(BertModel.from_pretrained(tmp_path / family, attention="eager"), reference, batch)


@pytest.mark.parametrize("family", ["roberta", "mpnet"])
def test_positions_follow_the_padding_on_either_side(family, tmp_path):
    reference = saved_family(family, tmp_path / family)
    ours = BertModel.from_pretrained(tmp_path / family, attention="eager")
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1], [1, 1, 1, 0, 11, 2]])  # right and left padding
    mask = (ids != 1).long()
    positions = ours.positions(ids)
    assert positions.tolist() == [[2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 1, 1], [1, 1, 1, 2, 3, 4]]
    with torch.no_grad():
        want, got = reference(ids, attention_mask=mask).last_hidden_state, ours(ids, mask).last_hidden_state
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=0)
        for i in range(2):  # right padding: each text alone gives its rows of the batch
            n = int(mask[i].sum())
            alone = ours(ids[i : i + 1, :n]).last_hidden_state[0]
            torch.testing.assert_close(alone, got[i, :n], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_folder_loads_in_transformers_as_the_same_class(family, tmp_path):
    import transformers

    reference = saved_family(family, tmp_path / "in")
    BertModel.from_pretrained(tmp_path / "in").save_pretrained(tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == family
    back = transformers.AutoModel.from_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    assert type(back) is type(reference)
    ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    with torch.no_grad():
        assert torch.equal(back(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_an_unknown_model_type_is_refused_by_name(tmp_path, tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    (tiny_folder / "config.json").write_text(json.dumps({**config, "model_type": "deberta-v2"}))
    with pytest.raises(ValueError, match="model_type 'deberta-v2' is not one minibert knows; it reads bert, roberta"):
        BertModel.from_pretrained(tiny_folder)


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_tokenizer_ids_equal_transformers(kind, tokenizers_dir, tmp_path):
    folder, hf_tokenizer = tokenizers_dir[kind]
    ours = Tokenizer.from_pretrained(folder)
    texts = multilingual_texts(300)
    assert [e.ids for e in ours.encode(texts)] == hf_tokenizer(texts)["input_ids"]
    pairs = (texts[:100], texts[100:200])
    want = hf_tokenizer(*pairs, truncation=True, max_length=24)["input_ids"]
    assert [e.ids for e in ours.encode(*pairs, max_length=24)] == want
    assert (ours.cls_token_id, ours.sep_token_id, ours.pad_token_id, ours.mask_token_id) == (
        hf_tokenizer.cls_token_id,
        hf_tokenizer.sep_token_id,
        hf_tokenizer.pad_token_id,
        hf_tokenizer.mask_token_id,
    )
    ours.save(tmp_path / "saved")  # its own file and configuration, read back the same
    again = Tokenizer.from_pretrained(tmp_path / "saved")
    assert [e.ids for e in again.encode(texts)] == hf_tokenizer(texts)["input_ids"]
    assert not (tmp_path / "saved" / "vocab.txt").exists()


def test_a_tokenizer_without_the_special_tokens_is_refused_by_name(tokenizers_dir, tmp_path):
    import shutil

    folder, _ = tokenizers_dir["bpe"]
    shutil.copytree(folder, tmp_path / "t")
    settings = json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    (tmp_path / "t" / "tokenizer_config.json").write_text(json.dumps({**settings, "cls_token": "<cls>"}))
    with pytest.raises(ValueError, match="tokenizer.json: its cls token '<cls>' is not in the vocabulary"):
        Tokenizer.from_pretrained(tmp_path / "t")


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet", "distilbert"])
def test_sentence_vectors_equal_sentence_transformers(family, tokenizers_dir, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    kind = FAMILIES[family][2]
    saved_family(family, tmp_path / "hf", tokenizers_dir[kind][0])
    transformer = models.Transformer(str(tmp_path / "hf"), max_seq_length=48)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    reference = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    reference.save(str(tmp_path / "st"))
    texts = multilingual_texts(20, seed=7) + [""]
    ours = Encoder.from_pretrained(tmp_path / "st")
    assert (
        ours.normalize and ours.engine.options().max_length == 48
    )  # sentence-transformers 6 keeps it in the tokenizer
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["roberta", "mpnet"])
def test_parity_reports_each_family_against_transformers(family, tokenizers_dir, tmp_path):
    from minibert.tools.parity import parity

    saved_family(family, tmp_path / "m", tokenizers_dir["bpe"][0])
    report = parity(tmp_path / "m")
    assert report["ok"] and report["judged_against"] is None, report["rows"]
    assert report["rows"]["layer 1"]["eager"] <= (0 if family == "roberta" else 1e-6)


def test_parity_judges_float32_against_float64_where_transformers_itself_is_that_far(tokenizers_dir, tmp_path):
    """Large activations (LayerNorm weights x 2000) put float32 rounding past 1e-5 on both sides: the default
    criterion then holds both to float64, and minibert passes within transformers' own error; a tolerance the
    caller gives stays a plain max abs diff."""
    from safetensors.torch import load_file, save_file

    from minibert.tools.parity import parity

    saved_family("mpnet", tmp_path / "m", tokenizers_dir["bpe"][0])
    weights = load_file(tmp_path / "m" / "model.safetensors")
    for key in weights:
        if "LayerNorm.weight" in key:
            weights[key] = weights[key] * 2000
    save_file(weights, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    plain = parity(tmp_path / "m", atol=1e-5)
    assert not plain["ok"]  # float32 rounding alone, at these magnitudes
    judged = parity(tmp_path / "m")
    assert judged["ok"] and judged["judged_against"] == "float64", judged["rows"]
    assert judged["rows"]["layer 1"]["reference"] > 1e-5


def test_int8_bf16_and_the_numpy_backend_on_a_relative(tokenizers_dir, tmp_path):
    saved_family("mpnet", tmp_path / "m", tokenizers_dir["bpe"][0])
    texts = multilingual_texts(8, seed=9)
    plain = Encoder.from_pretrained(tmp_path / "m")
    assert plain.engine.options().max_length == 68  # 70 positions, counted from pad id 1 + 1
    int8 = Encoder.from_pretrained(tmp_path / "m", quantize="int8")
    vectors = int8.encode(texts)
    assert np.abs(vectors - plain.encode(texts)).max() < 0.05
    int8.save_pretrained(tmp_path / "int8")  # its own family's names, read back without calibrating
    np.testing.assert_array_equal(Encoder.from_pretrained(tmp_path / "int8").encode(texts), vectors)
    half, full = Encoder.from_pretrained(tmp_path / "m", dtype="bfloat16").encode(texts), plain.encode(texts)
    cosine = (half * full).sum(1) / np.linalg.norm(half, axis=1) / np.linalg.norm(full, axis=1)
    assert cosine.min() > 0.99
    with pytest.raises(ValueError, match="the numpy backend computes BERT, not model_type 'mpnet'"):
        Encoder.from_pretrained(tmp_path / "m", backend="numpy")


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet", "distilbert", "electra"])
def test_sequence_classification_heads_match_transformers(family, tokenizers_dir, tmp_path):
    """bge-reranker-base is an XLM-R cross-encoder, ms-marco-electra-base an ELECTRA one, msmarco-distilbert
    cross-encoders DistilBERT: each family's head on its first token, as transformers computes it."""
    import transformers

    from minibert.heads import BertForSequenceClassification

    saved_family(family, tmp_path / "base")
    head_class = FAMILIES[family][1].replace("Model", "ForSequenceClassification")
    torch.manual_seed(1)
    reference = getattr(transformers, head_class).from_pretrained(
        tmp_path / "base", num_labels=3, attn_implementation="eager"
    )
    randomize_(reference)
    reference.eval().save_pretrained(tmp_path / "clf")
    ours = BertForSequenceClassification.from_pretrained(tmp_path / "clf")
    assert ours.newly_initialized == []
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        want, got = reference(ids, attention_mask=mask).logits, ours(ids, mask).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    ours.save_pretrained(tmp_path / "again")  # the family's own class and names
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "again").eval()
    assert type(back).__name__ == head_class
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask=mask).logits, want, atol=1e-6, rtol=0)


def test_an_xlm_roberta_cross_encoder_scores_as_sentence_transformers(tokenizers_dir, tmp_path):
    from sentence_transformers import CrossEncoder as Reference

    from minibert.classify import CrossEncoder

    xlmr_cross_encoder(tokenizers_dir, tmp_path, seed=2)
    reference = Reference(str(tmp_path / "ce"), device="cpu")
    texts = multilingual_texts(12, seed=11)
    pairs = [(texts[0], t) for t in texts[1:]]
    ours = CrossEncoder.from_pretrained(tmp_path / "ce")
    np.testing.assert_allclose(ours.predict(pairs), reference.predict(pairs), atol=1e-5, rtol=0)
    assert [h["corpus_id"] for h in ours.rank(texts[0], texts[1:])] == [
        h["corpus_id"] for h in reference.rank(texts[0], texts[1:])
    ]


def test_heads_minibert_computes_for_bert_only_say_so(tmp_path):
    from minibert.formats.errors import CheckpointError
    from minibert.heads import BertForQuestionAnswering

    saved_family("roberta", tmp_path / "m")
    with pytest.raises(CheckpointError, match="a roberta checkpoint; minibert reads BERT's relatives as BertModel"):
        BertForQuestionAnswering.from_pretrained(tmp_path / "m")


def test_the_trace_follows_a_relative_step_by_step(tmp_path):
    from minibert.tools.trace import component_parameters, trace

    reference = saved_family("mpnet", tmp_path / "m")
    model = BertModel.from_pretrained(tmp_path / "m")
    ids = torch.tensor([[0, 5, 6, 7, 2, 1]])
    batch = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    steps = trace(model, batch)
    assert "embeddings.token_type" not in steps and "layers.0.attention.masked_scores" in steps
    with torch.no_grad():
        want = reference(**batch, output_hidden_states=True).hidden_states
    for i in range(len(model.layers)):
        torch.testing.assert_close(steps[f"layers.{i}.ffn.norm"][0, :5], want[i + 1][0, :5], atol=1e-5, rtol=0)
    assert sum(component_parameters(model).values()) == model.config.parameter_count()
    saved_family("electra", tmp_path / "e")
    with pytest.raises(ValueError, match="narrower than its layers and projected"):
        trace(BertModel.from_pretrained(tmp_path / "e"), batch)


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "mpnet", "distilbert"])
def test_masked_lm_heads_match_transformers(family, tmp_path):
    """The masked-LM head of each family (lm_head.*, DistilBERT's vocab_*): BERT's MaskedLMHead, its
    projection tied to the word embeddings, as SPLADE models and fill-mask read it."""
    import transformers

    from minibert.heads import BertForMaskedLM

    saved_family(family, tmp_path / "base")
    head_class = FAMILIES[family][1].replace("Model", "ForMaskedLM")
    torch.manual_seed(3)
    reference = getattr(transformers, head_class).from_pretrained(tmp_path / "base", attn_implementation="eager")
    randomize_(reference)
    reference.eval().save_pretrained(tmp_path / "mlm")
    ours = BertForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert ours.newly_initialized == []
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 10, 2, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        want, got = reference(ids, attention_mask=mask).logits, ours(ids, mask).logits
    keep = mask.bool()
    torch.testing.assert_close(got[keep], want[keep], atol=1e-5, rtol=0)
    ours.save_pretrained(tmp_path / "again")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "again").eval()
    assert type(back).__name__ == head_class
    with torch.no_grad():
        torch.testing.assert_close(back(ids, attention_mask=mask).logits[keep], want[keep], atol=1e-6, rtol=0)


def test_fill_mask_takes_the_models_own_mask_token(tokenizers_dir, tmp_path):
    import subprocess
    import sys

    import transformers

    saved_family("roberta", tmp_path / "base", tokenizers_dir["bpe"][0])
    torch.manual_seed(4)
    reference = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "base").eval()
    randomize_(reference)
    reference.save_pretrained(tmp_path / "mlm")
    copy_files(tokenizers_dir["bpe"][0], tmp_path / "mlm")
    hf_tokenizer = tokenizers_dir["bpe"][1]
    text = "The quick brown <mask> jumps."
    with torch.no_grad():
        batch = hf_tokenizer([text], return_tensors="pt")
        logits = reference(**batch).logits[0, batch["input_ids"][0].tolist().index(hf_tokenizer.mask_token_id)]
    best = hf_tokenizer.convert_ids_to_tokens([int(logits.argmax())])[0]
    done = subprocess.run(
        [sys.executable, "-m", "minibert", "fill-mask", "--model", str(tmp_path / "mlm"), text, "--top-k", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == best
    refused = subprocess.run(
        [sys.executable, "-m", "minibert", "fill-mask", "--model", str(tmp_path / "mlm"), "The [MASK] jumps."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "exactly one <mask>, it holds 0" in refused.stderr


def test_a_distilbert_splade_model_gives_sentence_transformers_weights(tokenizers_dir, tmp_path):
    """naver/splade_v2_distil's kind: a DistilBertForMaskedLM read as a SPLADE model."""
    import transformers
    from sentence_transformers.sparse_encoder import SparseEncoder as Reference
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    from minibert.sparse import SparseEncoder

    saved_family("distilbert", tmp_path / "base")
    torch.manual_seed(5)
    model = transformers.DistilBertForMaskedLM.from_pretrained(tmp_path / "base").eval()
    randomize_(model)
    model.save_pretrained(tmp_path / "mlm")
    copy_files(tokenizers_dir["bpe"][0], tmp_path / "mlm")
    transformer = MLMTransformer(str(tmp_path / "mlm"), max_seq_length=60)
    Reference(modules=[transformer, SpladePooling(pooling_strategy="max")], device="cpu").save(str(tmp_path / "st"))
    texts = multilingual_texts(10, seed=13)
    want = Reference(str(tmp_path / "st"), device="cpu").encode(texts, convert_to_tensor=True).to_dense().numpy()
    got = SparseEncoder.from_pretrained(tmp_path / "st").dense(texts)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_electras_discriminator_has_no_masked_lm_head(tmp_path):
    from minibert.formats.errors import CheckpointError
    from minibert.heads import BertForMaskedLM

    saved_family("electra", tmp_path / "e")
    with pytest.raises(CheckpointError, match=r"BertForMaskedLM \(not ELECTRA's discriminator\)"):
        BertForMaskedLM.from_pretrained(tmp_path / "e")


def test_a_relative_reranker_served_answers_as_sentence_transformers(tokenizers_dir, tmp_path):
    """An XLM-R cross-encoder (bge-reranker-base's layout) behind `minibert serve`'s /v1/rerank."""
    from sentence_transformers import CrossEncoder as Reference
    from serving import Server

    reranker = xlmr_cross_encoder(tokenizers_dir, tmp_path, seed=6)
    texts = multilingual_texts(8, seed=17)
    want = Reference(str(reranker), device="cpu").predict([(texts[0], t) for t in texts[1:]])
    server = Server("--model", str(reranker))
    try:
        status, _, reply = server.request("/v1/rerank", {"query": texts[0], "documents": texts[1:]})
    finally:
        server.stop()
    assert status == 200, reply
    got = {r["index"]: r["relevance_score"] for r in reply["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(texts) - 1)], want, atol=1e-5, rtol=0)


def test_a_wordpiece_tokenizer_with_its_own_special_tokens_saves_as_it_loaded(tmp_path):
    """MPNet's kind: WordPiece and BERT's normalizer, but <s> </s> <pad> <mask> for specials."""
    import transformers
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Backend(models.WordPiece(unk_token="<unk>"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(
        multilingual_texts(300), trainers.WordPieceTrainer(vocab_size=500, special_tokens=specials)
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    wrapper = transformers.MPNetTokenizerFast(tokenizer_object=backend, **ROBERTA_SPECIALS)
    wrapper.save_pretrained(tmp_path / "in")
    ours = Tokenizer.from_pretrained(tmp_path / "in")
    assert ours.specials == {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}
    ours.save(tmp_path / "out")
    texts = multilingual_texts(100, seed=21)
    want = transformers.AutoTokenizer.from_pretrained(tmp_path / "in")(texts, texts[::-1])["input_ids"]
    back = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert type(back).__name__ == "MPNetTokenizer" and back(texts, texts[::-1])["input_ids"] == want
    assert [e.ids for e in Tokenizer.from_pretrained(tmp_path / "out").encode(texts, texts[::-1])] == want
