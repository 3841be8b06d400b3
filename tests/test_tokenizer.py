"""minibert.Tokenizer against transformers' tokenizers: the same ids, token types and masks."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
import torch

from minibert import Encoder, Tokenizer

TEXTS = [
    "Hello, world! BERT encoders are fun.",
    "Café crème, naïve façade, Ångström, résumé; ÉCOLE",  # accents, upper case
    "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。",  # Chinese: one token per ideograph
    "東京は日本の首都です。カタカナとひらがな",  # Japanese: kanji split, kana are not
    "I ❤️ emoji 😀🚀👍🏽 and symbols ∑√π",
    "   lots\t\tof   \n whitespace \r\n  ",
    "",
    "unaffable antidisestablishmentarianism supercalifragilisticexpialidocious",
    "x" * 150,  # longer than WordPiece's 100-character limit: one [UNK]
    "control\x00chars\x07 and\u200bzero width",
]
PAIRS = ["Second segment.", "另一句话", "", "more ✨ text", "a b c", "z", "Q?", "pair", "y", "ok"]


def assert_same_ids(ours, theirs, texts, pairs=None, **kwargs):
    got = ours(texts, pairs, **kwargs)
    want = theirs(texts, pairs, padding=True, return_tensors="pt", **kwargs)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(got[key], want[key]), (key, got[key], want[key])


@pytest.fixture(scope="module")
def hf_fast(minilm_dir):
    import transformers

    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


def test_tokenizer_json_matches_reference(minilm_dir, hf_fast):
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert_same_ids(tok, hf_fast, TEXTS)
    for text in TEXTS:
        assert_same_ids(tok, hf_fast, [text])


def test_pairs_match_reference(minilm_dir, hf_fast):
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert_same_ids(tok, hf_fast, TEXTS, PAIRS)
    batch = tok(["first"], ["second"])
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1]]


@pytest.mark.parametrize("max_length", [5, 16, 40])
def test_truncation_matches_reference(minilm_dir, hf_fast, max_length):
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert_same_ids(tok, hf_fast, TEXTS, truncation=True, max_length=max_length)
    assert_same_ids(tok, hf_fast, TEXTS, PAIRS, truncation=True, max_length=max_length)


def test_file_padding_settings_are_not_applied(minilm_dir):
    # tokenizer.json of all-MiniLM-L6-v2 says "pad to 128, truncate at 128"; a call pads to the longest.
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert tok(["a b"])["input_ids"].shape == (1, 4)
    assert tok(["word " * 600])["input_ids"].shape == (1, 512)  # the model's maximum, not the file's 128
    assert tok(["word " * 600], truncation=False)["input_ids"].shape == (1, 602)


@pytest.mark.parametrize("lowercase", [True, False])
def test_vocab_txt_matches_original_algorithm(minilm_dir, tmp_path, lowercase):
    """Built from vocab.txt alone, against transformers' pure-Python port of Google's BasicTokenizer
    and WordpieceTokenizer (an independent implementation), and its fast tokenizer for token types."""
    import transformers
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}))
    tok = Tokenizer.from_pretrained(tmp_path)
    legacy = BertTokenizerLegacy(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=lowercase)
    for text, pair in zip(TEXTS, PAIRS):
        assert tok([text], [pair])["input_ids"][0].tolist() == legacy(text, pair)["input_ids"], text
    fast = transformers.BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=lowercase)
    assert_same_ids(tok, fast, TEXTS, PAIRS)


def test_google_folder_lowercasing_from_name_or_argument(minilm_dir, tmp_path):
    for name, expected in [
        ("uncased_L-12_H-768_A-12", "hello"),
        ("cased_L-12_H-768_A-12", "[UNK]"),
        ("chinese_L-12_H-768_A-12", "hello"),
    ]:
        (tmp_path / name).mkdir()
        shutil.copy(minilm_dir / "vocab.txt", tmp_path / name / "vocab.txt")
        assert Tokenizer.from_pretrained(tmp_path / name).tokenize("HELLO")[1] == expected, name
    (tmp_path / "mybert").mkdir()
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "mybert" / "vocab.txt")
    with pytest.raises(ValueError, match="pass lowercase=True or lowercase=False"):
        Tokenizer.from_pretrained(tmp_path / "mybert")
    assert Tokenizer.from_pretrained(tmp_path / "mybert", lowercase=True).tokenize("HELLO")[1] == "hello"
    # an explicit argument also overrides tokenizer.json
    assert Tokenizer.from_pretrained(minilm_dir, lowercase=False).tokenize("HELLO")[1] == "[UNK]"


def test_special_ids_and_decode(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    assert (tok.pad_token_id, tok.mask_token_id, tok.vocab_size) == (0, 103, 30522)
    ids = tok(["Hello world"])["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]
    assert tok.decode(ids) == "hello world"
    assert tok.tokenize("unaffable") == ["[CLS]", "una", "##ffa", "##ble", "[SEP]"]


def test_bad_inputs(minilm_dir, tmp_path):
    tok = Tokenizer.from_pretrained(minilm_dir)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        tok(["ok", None])
    with pytest.raises(TypeError, match=r"texts\[0\] is bytes"):
        tok([b"bytes"])
    with pytest.raises(TypeError, match="texts must be a string or a list of strings, got int"):
        tok(5)
    with pytest.raises(ValueError, match="2 texts but 1 text_pairs"):
        tok(["a", "b"], ["c"])
    with pytest.raises(ValueError, match=r"max_length must be an integer >= 3"):
        tok(["a"], ["b"], max_length=2)
    with pytest.raises(ValueError, match="different lengths"):
        tok(["a", "a b c"], padding=False)
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\na\nb\n")
    with pytest.raises(ValueError, match=r"vocab.txt has no \[UNK\] token"):
        Tokenizer.from_pretrained(tmp_path, lowercase=True)


def test_corrupt_tokenizer_files_name_the_file(minilm_dir, tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nonsense"}}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizer file"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "mod')
    with pytest.raises(ValueError, match=r"tokenizer\.json is not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json is not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)


def test_tokenizer_truncation_is_per_call(minilm_dir):
    tok = Tokenizer.from_pretrained(minilm_dir)
    long = "word " * 100
    lengths = {}

    def work(limit):
        for _ in range(50):
            lengths.setdefault(limit, set()).add(len(tok.encode([long], max_length=limit)[0].ids))

    workers = [threading.Thread(target=work, args=(n,)) for n in (8, 64, 128)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert lengths == {8: {8}, 64: {64}, 128: {102}}


def test_a_duplicated_vocab_token_matches_transformers(tmp_path):
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hello", "##s", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"'hello' is on line 6 and again on line 8; it gets id 7"):
        ours = Tokenizer.from_pretrained(tmp_path, lowercase=True)
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    for text in ("hello worlds a", "a hello hello"):
        assert ours([text])["input_ids"][0].tolist() == reference(text)["input_ids"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\ncafé\n".encode("latin-1"), r"vocab\.txt is not UTF-8 text"),
        (b"[UNK]\n[CLS]\n[SEP]\n", r"vocab\.txt has no \[PAD\] token"),
    ],
)
def test_bad_vocab_files_name_the_file(tmp_path, content, match):
    (tmp_path / "vocab.txt").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_pretrained(tmp_path, lowercase=True)


def test_a_vocab_with_a_byte_order_mark_reads_as_without(tmp_path):
    words = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n"
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / "vocab.txt").write_text(words, encoding="utf-8")
    (tmp_path / "bom" / "vocab.txt").write_text(words, encoding="utf-8-sig")
    plain = Tokenizer.from_pretrained(tmp_path / "plain", lowercase=True)
    bom = Tokenizer.from_pretrained(tmp_path / "bom", lowercase=True)
    assert bom(["hello"])["input_ids"].tolist() == plain(["hello"])["input_ids"].tolist() == [[2, 4, 3]]


def test_a_tokenizer_json_without_unk_is_refused_at_load(minilm_dir, tmp_path):
    spec = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    del spec["model"]["vocab"]["[UNK]"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer\.json: .*lacks its unknown token '\[UNK\]'"):
        Tokenizer.from_pretrained(tmp_path)


def test_a_tokenizer_with_ids_past_the_model_is_refused_at_load(minilm_dir, tmp_path):
    shutil.copytree(minilm_dir, tmp_path / "m")
    values = json.loads((tmp_path / "m" / "config.json").read_text())
    values["vocab_size"] = 30000  # the tokenizer has 30522
    (tmp_path / "m" / "config.json").write_text(json.dumps(values))
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / "m" / "model.safetensors")
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"][:30000].clone()
    save_file(tensors, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"maps '.*' to id 30521, but the model's vocab_size is 30000"):
        Encoder.from_pretrained(tmp_path / "m")
