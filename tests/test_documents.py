"""Corpora of many documents: folders, globs, .zip and .tar.gz archives (local and https), their
order, decoding, separator, and the limits on what an archive may hold. Archives are built here."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from charrnn.core import files, paths
from charrnn.core.params import DataParams
from charrnn.data import corpus, documents, split
from charrnn.data.corpus import CorpusError

GUTENBERG = "header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n{}\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n"


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def put(rel: str, content: bytes | str) -> Path:
    path = Path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def fetch(source: str, **more) -> tuple[dict, str]:
    info = corpus.fetch(DataParams(source=source, **more), Path("out.txt"), Path("cache"))
    return info, Path("out.txt").read_text(encoding="utf-8")


def make_zip(rel: str, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(rel, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # a symbolic link, as Info-ZIP records one
            z.writestr(info, target)
    return Path(rel)


def make_tar(rel: str, members: dict[str, bytes], special: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(rel, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for info in special:
            t.addfile(info)
    return Path(rel)


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


# --- folders and globs -----------------------------------------------------------------------


def test_a_folder_is_read_sorted_by_path_with_hidden_and_dvc_files_skipped(here):
    put("corpora/novels/b.txt", "Bee.\n")
    put("corpora/novels/a.txt", "Ay.\r\n")
    put("corpora/novels/sub/c.txt", "Sea.\n")
    put("corpora/novels/.gitignore", "/big.txt\n")
    put("corpora/novels/big.txt.dvc", "outs: []\n")
    info, text = fetch("corpora/novels")
    assert text == "Ay.\n\nBee.\n\nSea.\n"  # the default separator "\n" after each document's newline: a blank line
    assert info["kind"] == "directory" and info["chars"] == len(text) and info["bytes"] == len(text.encode())
    assert [d["name"] for d in info["documents"]] == ["corpora/novels/a.txt", "corpora/novels/b.txt",
                                                      "corpora/novels/sub/c.txt"]
    assert info["documents"][0] == {"name": "corpora/novels/a.txt", "bytes": 5, "start": 0, "stop": 4,
                                    "sha256": hashlib.sha256(b"Ay.\r\n").hexdigest()}
    # each range holds the separator before its document: together they cover the corpus
    assert [(d["start"], d["stop"]) for d in info["documents"]] == [(0, 4), (4, 10), (10, 16)] and len(text) == 16
    assert info["raw_bytes"] == 5 + 5 + 5


def test_a_glob_picks_its_matches_and_the_separator_is_configurable(here):
    put("corpora/a.txt", "one")  # no final newline: it gets one
    put("corpora/b.md", "skipped\n")
    put("corpora/c.txt", "two\n")
    info, text = fetch("corpora/*.txt", separator="<|doc|>\n")
    assert text == "one\n<|doc|>\ntwo\n"
    assert info["kind"] == "glob" and [d["name"] for d in info["documents"]] == ["corpora/a.txt", "corpora/c.txt"]


def test_the_summary_hash_changes_when_any_document_does(here):
    put("corpora/a.txt", "one\n")
    put("corpora/b.txt", "two\n")
    first = fetch("corpora")[0]["sha256"]
    assert fetch("corpora")[0]["sha256"] == first
    put("corpora/b.txt", "too\n")
    assert fetch("corpora")[0]["sha256"] != first


def test_a_bad_byte_names_the_file_and_the_offset_and_keeps_the_previous_output(here):
    put("out.txt", "previous\n")
    put("corpora/a.txt", "fine\n")
    put("corpora/b.txt", b"ab\xffc")
    with pytest.raises(CorpusError, match=r"^corpora/b\.txt: the bytes at offset 2 are not valid utf-8 .*data\.encoding"):
        fetch("corpora")
    assert Path("out.txt").read_text() == "previous\n" and sorted(os.listdir(".")) == ["corpora", "out.txt"]


def test_each_document_is_decoded_with_data_encoding(here):
    put("corpora/a.txt", "天地玄黄\n".encode("gb18030"))
    put("corpora/b.txt", "宇宙洪荒\n".encode("gb18030"))
    assert fetch("corpora", encoding="gb18030")[1] == "天地玄黄\n\n宇宙洪荒\n"


def test_strip_gutenberg_strips_each_book(here):
    put("corpora/a.txt", GUTENBERG.format("Book one."))
    put("corpora/b.txt", GUTENBERG.format("Book two."))
    assert fetch("corpora", strip_gutenberg=True)[1] == "Book one.\n\nBook two.\n"


def test_a_book_without_gutenberg_markers_is_named(here):
    put("corpora/a.txt", GUTENBERG.format("Book one."))
    put("corpora/b.txt", "no markers\n")
    with pytest.raises(CorpusError, match=r"^corpora/b\.txt: no '\*\*\* START OF THE PROJECT GUTENBERG EBOOK' line"):
        fetch("corpora", strip_gutenberg=True)


@pytest.mark.parametrize("source, setup, match", [
    ("corpora/empty", lambda: put("corpora/empty/.gitkeep", ""), r"'corpora/empty' holds no file to read"),
    ("corpora/*.txt", lambda: put("corpora/a.md", "x"), r"'corpora/\*\.txt' matches no file"),
    ("corpora", lambda: put("corpora/a.txt", " \n\n"), r"the corpus from corpora is empty after clean-up"),
    ("corpora", lambda: (put("corpora/a.txt", "x\n"), os.mkfifo("corpora/pipe")),
     r"corpora/pipe is not a regular file \(a FIFO"),
    ("corpora", lambda: (put("corpora/a.txt", "x\n"), os.symlink("/etc/hostname", "corpora/link")),
     r"corpora/link is a symbolic link"),
])
def test_what_a_folder_cannot_hold_is_one_clear_error(here, source, setup, match):
    setup()
    with pytest.raises(CorpusError, match=match):
        fetch(source)
    assert not Path("out.txt").exists()


def test_a_file_whose_name_looks_like_a_glob_is_that_file(here):
    put("corpora/novel [1].txt", "the file\n")
    put("corpora/novel 1.txt", "what the glob would match\n")
    assert fetch("corpora/novel [1].txt") == ({"kind": "file", "source": "novel [1].txt", "sha256": hashlib.sha256(
        b"the file\n").hexdigest(), "raw_bytes": 9, "chars": 9, "bytes": 9}, "the file\n")
    assert corpus.local_source_problem("corpora/novel [1].txt", here) is None


def test_data_sha256_is_refused_for_a_folder(here):
    put("corpora/a.txt", "x\n")
    with pytest.raises(CorpusError, match=r"data\.sha256 pins one file or archive.*set data\.sha256: null"):
        fetch("corpora", sha256="a" * 64)


def test_a_single_file_is_unchanged(here):
    put("in.txt", "no final newline")
    info, text = fetch("in.txt")
    assert text == "no final newline" and "documents" not in info and info["kind"] == "file"


def test_folders_and_globs_outside_corpora_are_warned_about(here):
    put("elsewhere/a.txt", "x\n")
    put("corpora/a.txt", "x\n")
    for source in ("elsewhere", "elsewhere/*.txt"):
        kind, message = corpus.local_source_problem(source, here)
        assert kind == "warning" and "is outside corpora/" in message
    for source in ("corpora", "corpora/*.txt", "corpora/**/*.txt"):
        assert corpus.local_source_problem(source, here) is None


# --- archives --------------------------------------------------------------------------------


@pytest.mark.parametrize("maker", ["zip", "tar.gz"])
def test_an_archive_is_read_member_by_member_sorted(here, maker):
    members = {"b/2.txt": b"two\n", "a.txt": b"one\n", "b/.DS_Store": b"\x00junk"}
    raw = make_zip("c.zip", members) if maker == "zip" else make_tar("c.tar.gz", members)
    info, text = fetch(str(raw))
    assert text == "one\n\ntwo\n"
    assert info["kind"] == "archive" and info["source"] == str(raw) and info["sha256"] == hashlib.sha256(
        raw.read_bytes()).hexdigest()
    assert [d["name"] for d in info["documents"]] == ["a.txt", "b/2.txt"]


def test_an_archive_is_pinned_by_data_sha256(here):
    raw = make_zip("c.zip", {"a.txt": b"one\n"})
    assert fetch("c.zip", sha256=hashlib.sha256(raw.read_bytes()).hexdigest())[1] == "one\n"
    with pytest.raises(CorpusError, match=r"c\.zip: sha256 is [0-9a-f]{64}, but data\.sha256 says"):
        fetch("c.zip", sha256="a" * 64)


def test_a_bad_byte_in_a_member_names_the_archive_the_member_and_the_offset(here):
    make_tar("c.tar.gz", {"a.txt": b"fine\n", "dir/b.txt": b"abc\xff"})
    with pytest.raises(CorpusError, match=r"^c\.tar\.gz:dir/b\.txt: the bytes at offset 3 are not valid utf-8"):
        fetch("c.tar.gz")


@pytest.mark.parametrize("build, match", [
    (lambda: make_zip("x.zip", {"../evil.txt": b"x"}), r"x\.zip: the member '\.\./evil\.txt' would be written outside"),
    (lambda: make_zip("x.zip", {"/tmp/evil.txt": b"x"}), r"the member '/tmp/evil\.txt' would be written outside"),
    (lambda: make_zip("x.zip", {"a.txt": b"x"}, links={"link": "/etc/passwd"}), r"the member 'link' is a link"),
    (lambda: make_tar("x.tar.gz", {"a/../../evil.txt": b"x"}), r"would be written outside"),
    (lambda: make_zip("x.zip", {"C:\\evil.txt": b"x"}), r"the member 'C:\\\\evil\.txt' would be written outside"),
    (lambda: make_tar("x.tar.gz", {"a.txt": b"x"}, [special("l", tarfile.SYMTYPE, "/etc/passwd")]),
     r"x\.tar\.gz: the member 'l' is a link or not a regular file"),
    (lambda: make_tar("x.tar.gz", {"a.txt": b"x"}, [special("h", tarfile.LNKTYPE, "a.txt")]), r"the member 'h' is a link"),
    (lambda: make_tar("x.tar.gz", {}, [special("dev", tarfile.CHRTYPE)]), r"the member 'dev' is a link or not a regular"),
    (lambda: make_tar("x.tar.gz", {}, [special("fifo", tarfile.FIFOTYPE)]), r"the member 'fifo' is a link or not"),
    (lambda: make_zip("x.zip", {"d/.hidden": b"x"}), r"the archive x\.zip holds no file to read"),
    (lambda: put("x.zip", b"PK\x03\x04 not really"), r"x\.zip is not a readable archive"),
    (lambda: put("x.tar.gz", b"\x1f\x8b garbage"), r"x\.tar\.gz is not a readable archive"),
])
def test_a_hostile_archive_is_one_clear_error_and_writes_nothing(here, build, match, tmp_path_factory, monkeypatch):
    tmp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    name = str(build().name)
    with pytest.raises(CorpusError, match=match):
        fetch(name)
    assert not Path("out.txt").exists() and not Path("/tmp/evil.txt").exists() and not (here.parent / "evil.txt").exists()
    assert list(tmp.iterdir()) == []  # the unpacked members are gone too


@pytest.mark.parametrize("cap, value, match", [
    ("MAX_MEMBER_BYTES", 1000, r"the member 'big\.txt' unpacks past the cap of 1,000 bytes a member"),
    ("MAX_TOTAL_BYTES", 1500, r"unpacks past the cap .* 1,500 bytes in all; refused as an archive bomb"),
    ("MAX_MEMBERS", 2, r"holds more than 2 members"),
])
@pytest.mark.parametrize("maker", [make_zip, make_tar])
def test_the_archive_caps_stop_a_bomb(here, monkeypatch, cap, value, match, maker):
    monkeypatch.setattr(documents, cap, value)
    members = {"a.txt": b"a" * 800, "b.txt": b"b" * 800, "big.txt": b"x" * 1200}
    if cap == "MAX_MEMBER_BYTES":
        members = {"big.txt": b"x" * 5000}
    with pytest.raises(CorpusError, match=match):
        fetch(str(maker("x.zip" if maker is make_zip else "x.tar.gz", members)))
    assert not Path("out.txt").exists()


def test_the_caps_count_what_a_member_unpacks_to_not_what_its_header_says(here, monkeypatch):
    monkeypatch.setattr(documents, "MAX_MEMBER_BYTES", 1000)
    make_zip("x.zip", {"big.txt": b"x" * 50_000})
    data = bytearray(Path("x.zip").read_bytes())
    lie = (10).to_bytes(4, "little")  # both headers claim 10 bytes uncompressed
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22:local + 26], data[central + 24:central + 28] = lie, lie
    Path("x.zip").write_bytes(bytes(data))
    with pytest.raises(CorpusError):  # the cap, or zipfile's own check of the size: never 50,000 bytes written
        fetch("x.zip")
    assert not Path("out.txt").exists()


def test_an_archive_over_https(https, here):  # noqa: F811
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as z:
        z.writestr("b.txt", "two\n")
        z.writestr("a.txt", "one\n")
    https["server"].serve("/novels.zip", body.getvalue())
    pin = hashlib.sha256(body.getvalue()).hexdigest()
    info, text = fetch(f"{https['url']}/novels.zip", sha256=pin)
    assert text == "one\n\ntwo\n" and info["kind"] == "archive" and info["sha256"] == pin
    assert [d["name"] for d in info["documents"]] == ["a.txt", "b.txt"]


def test_the_caps_are_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for cap in ("MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_MEMBERS"):
        assert cap in readme
    assert f"{documents.MAX_MEMBER_BYTES >> 30} GiB" in readme and f"{documents.MAX_TOTAL_BYTES >> 30} GiB" in readme



# --- the held-out text of many documents -----------------------------------------------------


def corpus_of(here: Path, *docs: str, separator: str = "\n") -> Path:
    for i, doc in enumerate(docs):
        put(f"corpora/{i:02d}.txt", doc)
    info = corpus.fetch(DataParams(source="corpora", separator=separator), Path("data/raw/corpus.txt"), Path("cache"))
    files.write_json(paths.DOCUMENTS, corpus.documents_file(info))
    return here / "data/raw/corpus.txt"


def test_each_document_gives_its_last_val_fraction_to_the_held_out_text(here):
    # with its newline, and the separator before it, each document's range is 100, 201, 21 characters
    path = corpus_of(here, "a" * 99, "b" * 199, "c" * 19)
    s = split.Split.of(path, 0.1)
    held, train = "".join(s.held_out), "".join(s.train)
    assert held == "a" * 9 + "\n" + "b" * 19 + "\n" + "c\n"  # the last 10, 20 and 2 characters of each
    assert train == "a" * 90 + "\n" + "b" * 180 + "\n" + "c" * 18 and len(train) == s.at
    assert len(train) + len(held) == s.chars == len(path.read_text())
    assert "".join(s.train) == train  # re-readable


def test_one_document_splits_as_a_single_file_always_did(here):
    put("in.txt", "line one\nline two\n" * 50)
    info = corpus.fetch(DataParams(source="in.txt"), Path("data/raw/corpus.txt"), Path("cache"))
    files.write_json(paths.DOCUMENTS, corpus.documents_file(info))
    with_file = split.Split.of("data/raw/corpus.txt", 0.1)
    paths.DOCUMENTS.unlink()
    without = split.Split.of("data/raw/corpus.txt", 0.1)
    assert with_file == without and with_file.parts == ()
    assert with_file.train == split.TextSpan(Path("data/raw/corpus.txt"), 0, with_file.at)
    assert with_file.prompts() == without.prompts()


def test_prompts_come_from_every_document(here):
    path = corpus_of(here, *[f"{name}\n" * 200 for name in ("ALPH:", "BETA:", "GAMM:")])  # 120 held out of each
    assert split.Split.of(path, 0.1).prompts() == ["ALPH:", "BETA:", "GAMM:"]


@pytest.mark.parametrize("content, match", [
    ('{"documents": [{"start": 0, "stop": 3, "name": "a", "bytes": 1, "sha256": "x"}, '
     '{"start": 3, "stop": 5, "name": "b", "bytes": 1, "sha256": "x"}]}', r"does not describe .*\(10 characters\)"),
    ('{"documents": [{"start": 0, "stop": 3, "name": "a", "bytes": 1, "sha256": "x"}, '
     '{"start": 4, "stop": 10, "name": "b", "bytes": 1, "sha256": "x"}]}', r"must cover it end to end"),
    ('{"documents": 5}', r"is not a charrnn documents file"),
    ("not json", r"is not a charrnn documents file"),
])
def test_a_documents_file_that_does_not_fit_the_corpus_is_an_error(here, content, match):
    put("data/raw/corpus.txt", "0123456789")
    put(str(paths.DOCUMENTS), content)
    with pytest.raises(split.SplitError, match=match):
        split.Split.of("data/raw/corpus.txt", 0.1)


def test_a_corpus_written_by_hand_over_a_downloaded_one_splits_as_one_document(here):
    put("data/raw/corpus.txt", "0123456789")
    put(str(paths.DOCUMENTS), '{"documents": [{"start": 0, "stop": 30000, "name": "a", "bytes": 1, "sha256": "x"}]}')
    assert split.Split.of("data/raw/corpus.txt", 0.1) == split.Split(Path("data/raw/corpus.txt"), 10, 9)


def test_vocab_metrics_list_the_documents_of_a_corpus_of_many_only(here):
    from charrnn.data.vocab import Vocabulary, count_chars, vocab_metrics

    path = corpus_of(here, "ab\n", "cd\n")
    counts = count_chars([path.read_text()])
    vocab = Vocabulary.from_counts(counts, 1, 0)
    listed = vocab_metrics(vocab, counts, split.read_documents(path))["documents"]
    assert [d["name"] for d in listed] == ["corpora/00.txt", "corpora/01.txt"] and set(listed[0]) == {"name", "bytes", "sha256"}
    assert "documents" not in vocab_metrics(vocab, counts, split.read_documents(path)[:1])


def test_the_training_run_gets_the_documents_as_an_artifact(here):
    from charrnn.tracking import publishing

    class Run:
        logged: list = []

        def log_artifact(self, path):
            self.logged.append(str(path))

    run = Run()
    publishing.log_documents(run)  # no documents.json (a corpus written by hand): nothing
    corpus_of(here, "ab\n", "cd\n")
    publishing.log_documents(run)
    assert run.logged == ["data/raw/documents.json"]
