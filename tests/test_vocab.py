import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.data.vocab import (UNK, UNK_ID, VocabError, Vocabulary, count_chars, count_utf8, read_chunks, read_utf8,
                                vocab_metrics)


def vocab_of(text, **kw):
    return Vocabulary.from_counts(count_chars([text]), **kw)


def test_ids_sorted_by_code_point_with_unk_first():
    v = vocab_of("hello world\n")
    assert v.id_to_char == [UNK, "\n", " ", "d", "e", "h", "l", "o", "r", "w"]
    assert v.size == 10


def test_round_trip_and_unknown_characters():
    v = vocab_of("abc")
    ids = v.encode("abcx")
    assert ids.tolist() == [1, 2, 3, UNK_ID]
    assert v.decode(ids[:3]) == "abc"
    assert v.unknown_chars("axbyz") == ["x", "y", "z"]


def test_min_count_and_max_size():
    text = "aaaabbbcc d"
    assert vocab_of(text, min_count=3).chars == ("a", "b")
    # max_size keeps the most frequent; ties go to the lower code point (" " and "d" both once)
    assert vocab_of(text, max_size=3).chars == ("a", "b", "c")
    assert vocab_of(text, max_size=4).chars == (" ", "a", "b", "c")


def test_nothing_but_unk_is_an_error():
    with pytest.raises(VocabError, match="nothing but \\[UNK\\]"):
        vocab_of("abc", min_count=5)


def test_cjk_thousands_of_characters():
    chars = [chr(0x4E00 + i) for i in range(3500)]
    text = "".join(chars) + "".join(chars[:10])
    v = vocab_of(text)
    assert v.size == 3501
    ids = v.encode(text)
    assert ids.min() >= 1 and v.decode(ids) == text


def test_astral_plane_characters():
    v = vocab_of("a😀b")
    assert v.decode(v.encode("😀ab")) == "😀ab"


def test_metrics():
    counts = count_chars(["aaab"])
    v = Vocabulary.from_counts(counts, min_count=2)
    m = vocab_metrics(v, counts)
    assert m == {"size": 2, "distinct_chars": 2, "corpus_chars": 4, "coverage": 0.75, "unk_rate": 0.25}


def test_an_extended_vocabulary_keeps_every_parent_id_and_appends_the_new_characters():
    parent = vocab_of("abc d\n")
    counts = count_chars(["bbb zy é x\n"])  # no "a", "c" or "d"; new: "x", "y", "z", "é"
    v = parent.extended(counts)
    assert v.id_to_char[:parent.size] == parent.id_to_char  # every old id means what it meant
    assert v.chars[parent.size - 1:] == ("x", "y", "z", "é")  # the new ones, by code point
    assert v.encode("abcd").tolist() == parent.encode("abcd").tolist()
    assert v.decode(v.encode("é zab")) == "é zab"
    assert dict(zip(v.chars, v.counts))["a"] == 0 and dict(zip(v.chars, v.counts))["b"] == 3  # the new corpus's counts


def test_extension_keeps_the_parent_whole_and_applies_min_count_to_the_rest():
    parent = vocab_of("abc")
    v = parent.extended(count_chars(["xxxy"]), min_count=2)
    assert v.chars == ("a", "b", "c", "x")  # "y" is rarer than min_count; "a" to "c" stay though unseen
    assert parent.extended(count_chars(["cab"])) == Vocabulary(parent.chars, (1, 1, 1))


def test_an_extended_vocabulary_round_trips_and_is_told_from_a_sorted_one(tmp_path):
    v = vocab_of("mno").extended(count_chars(["abc"]))
    assert v.chars == ("m", "n", "o", "a", "b", "c")
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == v
    assert v.fingerprint != vocab_of("abcmno").fingerprint  # the same characters under other ids


def test_save_load_and_fingerprint(tmp_path):
    v = vocab_of("héllo\n")
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w == v and w.fingerprint == v.fingerprint
    assert vocab_of("other").fingerprint != v.fingerprint
    text = (tmp_path / "v.json").read_text(encoding="utf-8")
    assert '"é"' in text  # readable UTF-8, not \u escapes


def test_load_errors(tmp_path):
    with pytest.raises(VocabError, match="not found"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(VocabError, match="not a charrnn vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("unk"), r"'unk' \(what id 0 stands for\) must be '\[UNK\]', got None"),
    (lambda d: d.update(unk="<unk>"), r"must be '\[UNK\]', got '<unk>'"),
    (lambda d: d.update(format=2), r"'format' is 2; this charrnn reads format 1 only"),
    (lambda d: d.update(format="1"), r"'format' is '1'"),
    (lambda d: d.update(format=True), r"'format' is True"),
    (lambda d: d.pop("format"), r"'format' is None"),
    (lambda d: d.update(merges=[]), r"unknown keys \['merges'\]"),
    (lambda d: d.update(chars=["[UNK]", "a"]), r"single characters"),
])
def test_a_vocabulary_of_another_format_or_without_its_unk_is_refused(tmp_path, edit, match):
    data = json.loads(vocab_of("abc").to_json())
    edit(data)
    (tmp_path / "v.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VocabError, match=r"v\.json: not a charrnn vocabulary \(.*" + match):
        Vocabulary.load(tmp_path / "v.json")


@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000, '{"chars": ' + "[" * 65 + "]" * 65 + "}",
                                  '{"a": ' * 3000 + "1" + "}" * 3000])
def test_deeply_nested_json_is_a_vocab_error(tmp_path, text):
    (tmp_path / "v.json").write_text(text, encoding="utf-8")
    with pytest.raises(VocabError, match="JSON nested more than 64 levels deep"):
        Vocabulary.load(tmp_path / "v.json")


def test_chunked_counting_equals_whole(tmp_path):
    text = "the quick brown fox 狐狸\n" * 1000
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    chunked = count_chars(read_chunks(path, chunk_chars=777))
    assert np.array_equal(chunked, count_chars([text]))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 777, 1 << 20])
def test_utf8_chunks_end_on_characters_and_count_and_encode_as_text(tmp_path, chunk_bytes):
    """read_utf8 never cuts a character, whatever the chunk size; counting and encoding its
    chunks (ASCII ones without decoding) gives what the decoded text gives."""
    text = ("the quick brown fox 狐狸 😀 é\r\n" * 300) + "plain ASCII tail" * 10
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8", newline="")
    chunks = list(read_utf8(path, chunk_bytes=chunk_bytes))
    assert b"".join(chunks) == path.read_bytes() and all(c.decode("utf-8") for c in chunks)
    assert np.array_equal(count_utf8(chunks), count_chars([text]))
    vocab = Vocabulary.from_counts(count_chars([text]), min_count=2)  # [UNK] too: "狐" kept, rare ones not
    for dtype in (np.uint8, np.int32):
        ids = np.concatenate([vocab.encode_utf8(c, dtype) for c in chunks])
        assert ids.dtype == dtype and np.array_equal(ids, vocab.encode(text))


def test_utf8_ranges_start_and_stop_where_asked(tmp_path):
    from charrnn.data import split

    text = "ab狐狸c😀d" * 50
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    index = split.CharIndex.of(path)
    assert index.chars == len(text)
    for start, stop in ((0, 3), (2, 9), (5, len(text)), (7, 7)):
        got = b"".join(read_utf8(path, index.byte_offset(start), index.byte_offset(stop), chunk_bytes=4))
        assert got.decode("utf-8") == text[start:stop]


def test_char_index_finds_offsets_past_its_marks(tmp_path, monkeypatch):
    from charrnn.data import split

    monkeypatch.setattr(split, "INDEX_BYTES", 16)  # a mark every 16 bytes: characters cut by marks
    text = "x狐y😀z" * 40 + "ascii only " * 5
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    index = split.CharIndex.of(path)
    assert index.chars == len(text) and len(index.marks) > 10
    expected = [len(text[:char].encode("utf-8")) for char in range(len(text) + 1)]
    assert [index.byte_offset(char) for char in range(len(text) + 1)] == expected
    assert index.byte_offsets([9, 0, len(text), 9, 3]) == [expected[9], 0, expected[-1], expected[9], expected[3]]
    vocab = Vocabulary.from_counts(count_chars([text]))
    ids = np.concatenate(list(split.TextSpan(path, 13, 170).ids(vocab, np.uint8, index)))
    assert vocab.decode(ids) == text[13:170]


# --- properties (Hypothesis) -----------------------------------------------------------------


TEXTS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, min_count=st.integers(1, 3), max_size=st.integers(0, 10))
def test_any_text_round_trips_through_its_vocabulary(tmp_path_factory, text, min_count, max_size):
    counts = count_chars([text])
    try:
        vocab = Vocabulary.from_counts(counts, min_count, max_size)
    except VocabError:
        assert all(text.count(c) < min_count for c in set(text))
        return
    assert (not max_size or len(vocab.chars) <= max_size) and all(text.count(c) >= min_count for c in vocab.chars)
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert all((i == UNK_ID) == (c not in vocab.chars) for i, c in zip(ids.tolist(), text))
    kept = "".join(c for c in text if c in vocab.chars)
    assert vocab.decode(i for i in ids.tolist() if i != UNK_ID) == kept
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path) == vocab and Vocabulary.load(path).fingerprint == vocab.fingerprint


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_any_file_loads_as_a_vocabulary_or_fails_with_a_vocab_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("v") / "vocab.json"
    path.write_bytes(data)
    try:
        vocab = Vocabulary.load(path)
    except VocabError:
        return
    chars = "".join(vocab.chars)  # a loaded vocabulary is a usable one: its characters round-trip
    assert vocab.decode(vocab.encode(chars).tolist()) == chars
    vocab.save(path)
    assert Vocabulary.load(path) == vocab
