"""Hostile but realistic input, table-driven, in classes: params, corpora, model directories, deep
JSON, the CLI, MLflow and the environment. Every case must end with exit status 1, exactly one `error:` line that names the
problem, no traceback, and no new or changed output (stage outputs, metrics, dvc.lock).

Each case runs against its own copy of one small project that has been through `dvc repro`, so
there is a model, a vocabulary and records to break."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from charrnn.core.params import parse_yaml
from tests.kit import tmpfs
from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow

BIN = Path(sys.prefix) / "bin"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("built") / "p", shakespeare_like(30_000))
    project.dvc("repro")
    return project


@dataclass
class Case:
    id: str
    command: list[str]  # a stage name, or ["charrnn", ...]
    expect: str  # a regex the `error:` line must match
    setup: Callable[[Path], None] = lambda root: None
    env: dict = field(default_factory=dict)
    cwd: str = "."  # relative to the project copy


def params(**overrides) -> Callable[[Path], None]:
    """Set params, each value written as YAML text: params(train__seed=-1) sets train.seed;
    a value of DELETE removes the key."""
    def setup(root: Path) -> None:
        raw = parse_yaml((root / "params.yaml").read_text(encoding="utf-8"))
        literals = {}
        for i, (key, value) in enumerate(overrides.items()):
            *sections, name = key.split("__")
            table = raw
            for section in sections:
                table = table[section]
            assert name in table, key
            if value is DELETE:
                del table[name]
            else:
                table[name] = placeholder = f"@value{i}@"
                literals[placeholder] = str(value)
        text = yaml.safe_dump(raw, allow_unicode=True)
        for placeholder, literal in literals.items():
            text = text.replace(f"'{placeholder}'", literal).replace(placeholder, literal)
        (root / "params.yaml").write_text(text, encoding="utf-8")
    return setup


DELETE = object()


def write(rel: str, content: bytes | str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return setup


def both(*setups) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for s in setups:
            s(root)
    return setup


def edit_json(rel: str, **changes) -> Callable[[Path], None]:
    import json

    def setup(root: Path) -> None:
        data = json.loads((root / rel).read_text(encoding="utf-8"))
        data.update(changes)
        (root / rel).write_text(json.dumps(data), encoding="utf-8")
    return setup


def truncate(rel: str, keep: int) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).write_bytes((root / rel).read_bytes()[:keep])
    return setup


def remove(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        shutil.rmtree(root / rel) if (root / rel).is_dir() else (root / rel).unlink()
    return setup


def source(text: bytes, **more) -> Callable[[Path], None]:
    """A local corpus file as data.source."""
    return both(write("in.txt", text), params(data__source="in.txt", **more))


def folder(files: dict[str, bytes | str], source: str = "corpora/novels", **more) -> Callable[[Path], None]:
    """Files under corpora/novels/, and data.source naming the folder (or `source`)."""
    return both(*(write(f"corpora/novels/{name}", content) for name, content in files.items()),
                params(data__source=f"'{source}'", **more))


def special_file(rel: str, make: Callable[[str], None]) -> Callable[[Path], None]:
    """A FIFO or a link at `rel`, made by `make(path)`."""
    def setup(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(str(root / rel))
    return setup


def archive(rel: str, members: dict[str, bytes] = {}, links: dict[str, tuple[bytes, str]] = {}) -> Callable[[Path], None]:
    """A .zip or .tar.gz at `rel` holding `members`, and `links` (name: (tar type, target)),
    as data.source."""
    def setup(root: Path) -> None:
        import io
        import tarfile
        import zipfile

        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".zip"):
            with zipfile.ZipFile(path, "w") as z:
                for name, data in members.items():
                    z.writestr(name, data)
        else:
            with tarfile.open(path, "w:gz") as t:
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
                for name, (kind, target) in links.items():
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname = kind, target
                    t.addfile(info)
        params(data__source=rel)(root)
    return setup


GEN = ["charrnn", "generate", "--prompt", "ROMEO:", "--num-chars", "20"]
EVAL = ["charrnn", "evaluate", "--text", "corpus-src.txt"]

# --- params: seeds, temperatures, codecs, sizes, types, keys -----------------------------------------
PARAMS = [
    Case("seed-negative", ["train"], r"'train\.seed' must be an integer from 0 to 2147483647, got -1", params(train__seed=-1)),
    Case("seed-huge", ["sample"], r"'sample\.seed' must be an integer from 0 to 2147483647",
         params(sample__seed=10**20)),
    Case("seed-float", ["train"], r"'train\.seed' must be an integer, got 4\.5", params(train__seed=4.5)),
    Case("temperature-tiny", ["sample"], r"'sample\.temperature' must be a number from 1e-06 to 100",
         params(sample__temperature="1.0e-50")),
    Case("temperature-nan", ["sample"], r"'sample\.temperature' must be a finite number", params(sample__temperature=".nan")),
    Case("encoding-base64", ["download"], r"'data\.encoding' must name a text encoding", params(data__encoding="base64")),
    Case("encoding-rot13", ["download"], r"'data\.encoding' must name a text encoding", params(data__encoding="rot13")),
    Case("encoding-unknown", ["download"], r"'data\.encoding' must name a text encoding .*'klingon'",
         params(data__encoding="klingon")),
    Case("units-absurd", ["train"], r"train\.units=1,000,000,000 would need about .* of memory to train; this machine has",
         params(train__units=1_000_000_000)),
    Case("embedding-absurd", ["train"], r"train\.embedding_dim=.* would need about", params(train__embedding_dim=10**11)),
    Case("batch-absurd", ["train"], r"train\.batch_size=.* would need about", params(train__batch_size=10**11)),
    Case("layers-many", ["train"], r"'train\.layers' must be an integer from 1 to 64", params(train__layers=10_000)),
    Case("epochs-many", ["train"], r"'train\.epochs' must be an integer from 1 to 1000", params(train__epochs=10**9)),
    Case("threads-many", ["train"], r"'train\.threads' must be an integer from 0 to 1024", params(train__threads=10**6)),
    Case("learning-rate-inf", ["train"], r"'train\.learning_rate' must be a finite number, got inf",
         params(train__learning_rate=".inf")),
    Case("learning-rate-string", ["train"], r"'train\.learning_rate' must be a finite number, got 'fast'",
         params(train__learning_rate="fast")),
    Case("misspelt-key", ["train"], r"unknown key 'train\.unit' \(did you mean 'train\.units'\?\)",
         lambda root: (root / "params.yaml").write_text(
             (root / "params.yaml").read_text().replace("train:\n", "train:\n  unit: 64\n", 1))),
    Case("deleted-key", ["train"], r"missing key 'train\.patience' \(every key must be in the file; the default is 0\)",
         params(train__patience=DELETE)),
    Case("prompts-string", ["sample"], r"'sample\.prompts' must be a list of strings", params(sample__prompts="'ROMEO:'")),
    Case("prompts-empty-string", ["sample"], r"'sample\.prompts' must be a list of at most 1024 non-empty strings",
         params(sample__prompts='["ok", ""]')),
    Case("prompts-unknown-chars", ["sample"], r"prompt 0 \('¿¡'\) has no character of the model's vocabulary: .*"
         r"-S 'sample\.prompts=\[\"\.\.\.\"\]'", params(sample__prompts='["¿¡"]')),
    Case("num-chars-wraps", ["sample"], r"'sample\.num_chars' must be an integer from 1 to 1000000, got 4294967306",
         params(sample__num_chars=4294967306)),
    Case("top-p-above-one", ["sample"], r"'sample\.top_p' must be > 0 and <= 1, got 1\.5", params(sample__top_p=1.5)),
    Case("top-p-below-float32", ["sample"], r"'sample\.top_p' must be 0 or of a size a 32-bit float holds .* got 1e-40",
         params(sample__top_p="1.0e-40")),
    Case("top-k-negative", ["sample"], r"'sample\.top_k' must be an integer from 0", params(sample__top_k=-1)),
    Case("seq-length-zero", ["make_tfrecords"], r"'seq_length' must be an integer from 1 to 100000, got 0",
         params(seq_length=0)),
    Case("val-fraction-one", ["make_tfrecords"], r"'data\.val_fraction' must be strictly between 0 and 1",
         params(data__val_fraction=1.0)),
    Case("eval-batch-zero", ["evaluate_perplexity"], r"'evaluate\.batch_size' must be > 0", params(evaluate__batch_size=0)),
    Case("separator-lone-surrogate", ["download"], r"'data\.separator' must be a string of valid Unicode",
         params(data__separator='"\\ud800"')),
    Case("sha256-malformed", ["download"], r"'data\.sha256' must be 64 hex digits", params(data__sha256="xyz")),
    Case("params-not-yaml", ["train"], r"params\.yaml: not valid YAML", write("params.yaml", "train: [unclosed\n")),
    Case("params-duplicate-key", ["train"], r"params\.yaml: not valid YAML: .*duplicate key",
         lambda root: (root / "params.yaml").write_text((root / "params.yaml").read_text() + "seq_length: 3\n")),
    Case("params-a-list", ["train"], r"params\.yaml: the file must be a mapping", write("params.yaml", "- 1\n- 2\n")),
    Case("params-not-utf8", ["train"], r"params\.yaml: cannot be read", write("params.yaml", b"train:\n  cell: \xff\n")),
    Case("vocab-nothing-kept", ["build_vocab"], r"the vocabulary would hold nothing but \[UNK\]",
         params(vocab__min_count=10**12)),
    Case("init-from-size-conflict", ["build_vocab"], r"train\.init_from: train\.units is 64 but the parent's is 32",
         both(lambda root: _parent(root), params(train__init_from="parent", train__units=64))),
    Case("init-from-not-a-uri", ["build_vocab"], r"'train\.init_from' must be \"\" \(train from scratch\), a model "
         r"directory, or models:/<name>@<alias>", params(train__init_from="'models:/charrnn'")),
]

# --- corpora -----------------------------------------------------------------------------------------
CORPORA = [
    Case("corpus-missing", ["download"], r"data\.source 'nowhere\.txt' is not a preset, an https:// URL, env:NAME or an "
         r"existing file", params(data__source="nowhere.txt")),
    Case("corpus-empty-folder", ["download"], r"data\.source 'corpora/novels' holds no file to read \(hidden files",
         folder({".gitkeep": "", "big.txt.dvc": "outs: []\n"})),
    Case("corpus-glob-no-match", ["download"], r"data\.source 'corpora/novels/\*\.txt' matches no file",
         folder({"a.md": "text\n"}, source="corpora/novels/*.txt")),
    Case("corpus-folder-not-utf8", ["download"], r"corpora/novels/b\.txt: the bytes at offset 3 are not valid utf-8 "
         r".*set data\.encoding", folder({"a.txt": "fine\n", "b.txt": b"abc\xff more"})),
    Case("corpus-folder-fifo", ["download"], r"corpora/novels/pipe is not a regular file \(a FIFO",
         both(folder({"a.txt": "fine\n"}), special_file("corpora/novels/pipe", os.mkfifo))),
    Case("corpus-folder-symlink", ["download"], r"corpora/novels/link is a symbolic link",
         both(folder({"a.txt": "fine\n"}), special_file("corpora/novels/link", lambda p: os.symlink("/etc/hostname", p)))),
    Case("corpus-folder-sha256", ["download"], r"data\.sha256 pins one file or archive, but data\.source "
         r"'corpora/novels' is a folder", folder({"a.txt": "fine\n"}, data__sha256="a" * 64)),
    Case("archive-member-escapes", ["download"], r"corpora/n\.zip: the member '\.\./\.\./evil\.txt' would be written "
         r"outside", archive("corpora/n.zip", {"a.txt": b"fine\n", "../../evil.txt": b"x"})),
    Case("archive-member-absolute", ["download"], r"the member '/tmp/evil\.txt' would be written outside",
         archive("corpora/n.tar.gz", {"/tmp/evil.txt": b"x"})),
    Case("archive-member-symlink", ["download"], r"corpora/n\.tar\.gz: the member 'l' is a link or not a regular file",
         archive("corpora/n.tar.gz", {"a.txt": b"fine\n"}, {"l": (b"2", "/etc/passwd")})),
    Case("archive-member-hardlink", ["download"], r"the member 'h' is a link or not a regular file",
         archive("corpora/n.tar.gz", {"a.txt": b"fine\n"}, {"h": (b"1", "a.txt")})),
    Case("archive-not-an-archive", ["download"], r"corpora/n\.zip is not a readable archive",
         both(write("corpora/n.zip", b"PK\x03\x04 not a zip"), params(data__source="corpora/n.zip"))),
    Case("corpus-not-utf8", ["download"], r"the bytes at offset 3 are not valid utf-8 .*set data\.encoding",
         source(b"abc\xff\xfe more")),
    Case("corpus-encoded-surrogate", ["download"], r"the bytes at offset 2 are not valid utf-8", source(b"ab\xed\xa0\x80cd")),
    Case("corpus-empty", ["download"], r"the corpus from in\.txt is empty after clean-up", source(b"")),
    Case("corpus-whitespace", ["download"], r"is empty after clean-up", source(b"\xef\xbb\xbf \r\n\t\n")),
    Case("corpus-no-gutenberg-markers", ["download"], r"no '\*\*\* START OF THE PROJECT GUTENBERG EBOOK' line found",
         source(b"plain text\n", data__strip_gutenberg="true")),
    Case("corpus-sha256-mismatch", ["download"], r"in\.txt: sha256 is [0-9a-f]{64}, but data\.sha256 says",
         source(b"hello\n", data__sha256="a" * 64)),
    Case("source-http", ["download"], r"only https:// URLs are supported, got http://\*\*\*@example\.org/x\.txt\?token=\*\*\*",
         params(data__source="'http://u:pw@example.org/x.txt?token=secret'")),
    Case("source-ftp", ["download"], r"only https:// URLs are supported", params(data__source="ftp://example.org/x.txt")),
    Case("source-bad-port", ["download"], r"not a valid URL: https://example\.org:notaport/x\.txt",
         params(data__source="https://example.org:notaport/x.txt")),
    Case("source-env-unset", ["download"], r"environment variable 'NO_SUCH_VARIABLE' is not set",
         params(data__source="env:NO_SUCH_VARIABLE")),
    Case("corpus-too-short", ["make_tfrecords"], r"the corpus has .* characters; with seq_length=5000 .* it needs at least",
         params(seq_length=5000)),
    Case("one-window-random-offset", ["train"], r"the training text makes only 1 window\(s\) .*train\.random_offset",
         both(write("data/raw/corpus.txt", "abcdefghij" * 40), params(seq_length=150, data__val_fraction=0.45),
              lambda root: _run(root, ["build_vocab"]), lambda root: _run(root, ["make_tfrecords"]))),
]

# --- model directories -------------------------------------------------------------------------------
MODEL_DIRECTORIES = [
    Case("weights-truncated", GEN, r"model\.weights\.h5 is not a readable weights file", truncate("data/model/model.weights.h5", 4000)),
    Case("weights-garbage", GEN, r"model\.weights\.h5 is not a readable weights file", write("data/model/model.weights.h5", b"junk" * 500)),
    Case("weights-missing", ["sample"], r"model\.weights\.h5 is missing", remove("data/model/model.weights.h5")),
    Case("vocab-invalid-utf8", GEN, r"vocab\.json: not a charrnn vocabulary",
         write("data/model/vocab.json", b'{"format": 1, "unk": "[UNK]", "chars": ["\xff"], "counts": [1]}')),
    Case("vocab-lone-surrogate", GEN, r"single characters \(no lone surrogates\)",
         write("data/model/vocab.json", '{"format": 1, "unk": "[UNK]", "chars": ["\\ud800"], "counts": [1]}')),
    Case("vocab-not-the-models", ["evaluate_perplexity"], r"vocab\.json is not the vocabulary .* was trained with",
         write("data/model/vocab.json", '{"format": 1, "unk": "[UNK]", "chars": ["a", "b"], "counts": [1, 1]}')),
    Case("config-unknown-cell", GEN, r"config\.json: 'cell' must be 'gru' or 'lstm', got 'transformer'",
         edit_json("data/model/config.json", cell="transformer")),
    Case("config-negative-units", ["sample"], r"config\.json: 'units' must be > 0, got -5", edit_json("data/model/config.json", units=-5)),
    Case("config-string-size", GEN, r"config\.json: 'embedding_dim' must be an integer, got '16'",
         edit_json("data/model/config.json", embedding_dim="16")),
    Case("config-absurd-units", GEN, r"config\.json does not match model\.weights\.h5: the config .*units=1000000000",
         edit_json("data/model/config.json", units=10**9)),
    Case("model-missing", ["sample"], r"data/model does not exist: .*`dvc repro train`", remove("data/model")),
    Case("weights-nan", ["sample"], r"model\.weights\.h5 holds NaN or infinite values \(in .*\): the file is damaged",
         lambda root: _poison(root, float("nan"))),
    Case("weights-inf", GEN, r"model\.weights\.h5 holds NaN or infinite values", lambda root: _poison(root, float("inf"))),
    Case("vocab-unk-renamed", GEN, r"vocab\.json: not a charrnn vocabulary \('unk' \(what id 0 stands for\) must be "
         r"'\[UNK\]', got '<unk>'\)", edit_json("data/model/vocab.json", unk="<unk>")),
    Case("vocab-format-future", ["charrnn", "info"], r"vocab\.json: .*'format' is 7; this charrnn reads format 1 only",
         edit_json("data/model/vocab.json", format=7)),
    Case("vocab-pipeline-no-unk", ["make_tfrecords"], r"data/vocab\.json: not a charrnn vocabulary \('unk'",
         edit_json("data/vocab.json", unk=None)),
    Case("init-from-nowhere", ["build_vocab"], r"train\.init_from 'nowhere': nowhere does not exist",
         params(train__init_from="nowhere")),
    Case("init-from-damaged", ["build_vocab"], r"train\.init_from 'parent': parent/model\.weights\.h5 is not a readable "
         r"weights file", both(lambda root: _parent(root), truncate("parent/model.weights.h5", 4000),
                              params(train__init_from="parent"))),
    Case("init-from-not-recorded", ["train"], r"data/parent\.json was written for another train\.init_from than "
         r"'parent': run `dvc repro build_vocab`", both(lambda root: _parent(root), params(train__init_from="parent"))),
]

# --- JSON nested too deep, in every file read --------------------------------------------------------
DEEP_JSON = [
    Case("config-nested-deep", GEN, r"config\.json: not valid JSON \(JSON nested more than 64 levels deep\)",
         write("data/model/config.json", "[" * 10_000 + "]" * 10_000)),
    Case("vocab-nested-deep", ["charrnn", "info"], r"vocab\.json: not a charrnn vocabulary \(JSON nested more than 64",
         write("data/model/vocab.json", '{"chars": ' * 10_000 + "[]" + "}" * 10_000)),
    Case("metrics-nested-deep", ["charrnn", "outputs"], r"metrics/perplexity\.json is not a readable metrics file "
         r"\(JSON nested more", write("metrics/perplexity.json", '{"loss": ' + "[" * 10_000 + "]" * 10_000 + "}")),
    Case("meta-nested-deep", ["train"], r"data/records/meta\.json: not valid JSON \(JSON nested more than 64",
         write("data/records/meta.json", "[" * 100 + "]" * 100)),
    Case("meta-not-records", ["train"], r"meta\.json: not a charrnn records description",
         write("data/records/meta.json", '{"seq_length": 5}')),
    Case("records-old-format", ["train"], r"data/records/meta\.json: records of an older charrnn \(one window per "
         r"record, format 1\); this charrnn reads format 2 only: run `dvc repro make_tfrecords` to rebuild them",
         write("data/records/meta.json", '{"seq_length": 100, "dtype": "<u2", "vocab_size": 66, "vocab_fingerprint": '
               '"x", "corpus_chars": 1000, "split": 900, "train_windows": 8, "val_windows": 0, "train_shards": '
               '["train-00000.tfrecord"], "val_shards": []}')),
]

# --- the CLI -----------------------------------------------------------------------------------------
CLI = [
    Case("info-missing-dir", ["charrnn", "info", "--model", "nowhere"], r"nowhere does not exist"),
    Case("info-a-file", ["charrnn", "info", "--model", "params.yaml"], r"params\.yaml is a file, not a model directory"),
    Case("runs-outside-a-project", ["charrnn", "runs"], r"not inside a charrnn project", cwd="/"),
    Case("runs-corrupt-store", ["charrnn", "runs"], r"mlflow\.db is not a readable MLflow database",
         write("mlruns/mlflow.db", b"SQLite format 3\x00" + b"\xff" * 4096)),
    Case("outputs-malformed-metrics", ["charrnn", "outputs"], r"metrics/perplexity\.json is not a readable metrics file",
         write("metrics/perplexity.json", "{not json")),
    Case("outputs-metrics-not-numbers", ["charrnn", "outputs"], r"metrics/perplexity\.json: 'loss' is 'low', not a number",
         edit_json("metrics/perplexity.json", loss="low")),
    Case("evaluate-missing-text", ["charrnn", "evaluate", "--text", "nowhere.txt"], r"nowhere\.txt: No such file or directory"),
    Case("evaluate-text-a-directory", ["charrnn", "evaluate", "--text", "data"], r"data: Is a directory"),
    Case("evaluate-seq-length-zero", [*EVAL, "--seq-length", "0"], r"--seq-length must be an integer from 1 to 100000, got 0"),
    Case("evaluate-seq-length-negative", [*EVAL, "--seq-length", "-3"], r"--seq-length must be an integer from 1 to 100000, got -3"),
    Case("evaluate-encoding-base64", [*EVAL, "--encoding", "base64"], r"--encoding must name a text encoding"),
    Case("evaluate-batch-zero", [*EVAL, "--batch-size", "0"], r"--batch-size must be > 0"),
    Case("evaluate-threads-negative", [*EVAL, "--threads", "-2"], r"--threads must be an integer from 0 to 1024, got -2"),
    Case("generate-num-chars-wraps", [*GEN, "--num-chars", "4294967306"],
         r"num_chars must be an integer from 1 to 1,000,000, got 4294967306 \(raise the cap with --max-chars\)"),
    Case("generate-num-chars-3e9", [*GEN, "--num-chars", "3000000000"], r"num_chars must be an integer from 1 to 1,000,000"),
    Case("generate-temperature-zero", [*GEN, "--temperature", "0"], r"temperature must be a number from 1e-06 to 100, got 0\.0"),
    Case("generate-temperature-nan", [*GEN, "--temperature", "nan"], r"temperature must be a finite number, got nan"),
    Case("generate-seed-negative", [*GEN, "--seed", "-1"], r"seed must be an integer from 0 to 2147483647, got -1"),
    Case("generate-top-p", [*GEN, "--top-p", "2"], r"top_p must be > 0 and <= 1, got 2\.0"),
    Case("generate-top-p-below-float32", [*GEN, "--top-p", "1e-300"], r"top_p must be 0 or of a size a 32-bit float"),
    Case("generate-empty-prompt", ["charrnn", "generate", "--prompt", ""], r"prompt 0 is empty"),
    Case("generate-unknown-prompt", ["charrnn", "generate", "--prompt", "¿¡"], r"prompt 0 \('¿¡'\) has no character"),
    Case("generate-max-chars-zero", [*GEN, "--max-chars", "0"], r"--max-chars must be at least 1"),
    Case("generate-threads-many", [*GEN, "--threads", "5000"], r"--threads must be an integer from 0 to 1024, got 5000"),
    Case("generate-not-a-number", [*GEN, "--num-chars", "ten"], r"argument --num-chars: invalid int value: 'ten'"),
    Case("generate-unknown-flag", [*GEN, "--colour", "red"], r"unrecognized arguments: --colour red"),
    Case("no-command", ["charrnn"], r"the following arguments are required: command"),
    Case("promote-no-store", ["charrnn", "promote", "best"], r"no MLflow store at .* yet: run the pipeline first"),
    Case("promote-bad-alias", ["charrnn", "promote", "1", "--alias", "latest"], r"alias 'latest' is not usable"),
    Case("evaluate-utf8-read-as-utf16", ["charrnn", "evaluate", "--text", "en.txt", "--encoding", "utf-16"],
         r"error: 100\.0% of en\.txt's characters \(read as utf-16\) are not in the vocabulary of data/model and count "
         r"as \[UNK\]: the loss would measure nothing; check --encoding", write("en.txt", "ROMEO: the night is fair.\n" * 300)),
    Case("evaluate-another-language", ["charrnn", "evaluate", "--text", "zh.txt"],
         r"% of zh\.txt's characters \(read as utf-8\) are not in the vocabulary", write("zh.txt", "天地玄黄，宇宙洪荒。\n" * 200)),
    Case("held-out-blank-lines", ["sample"], r"the held-out text \(characters [0-9,]+ to 30,000 of data/raw/corpus\.txt\) "
         r"has no usable line .*set sample\.prompts", both(params(sample__prompts="[]"), lambda root: (
             root / "data/raw/corpus.txt").write_text(shakespeare_like(27_000) + "\n" * 3_000, encoding="utf-8"))),
]

# --- MLflow: names, experiments, stores --------------------------------------------------------------
MLFLOW = [
    Case("registered-model-slash", ["train"], r"'tracking\.registered_model' must be a registered-model name MLflow accepts",
         params(tracking__registered_model="'my model/v1'")),
    Case("registered-model-at", ["sample"], r"'tracking\.registered_model' must be .*none of / : @",
         params(tracking__registered_model="charrnn@prod")),
    Case("registered-model-quote", ["train"], r"'tracking\.registered_model' must be", params(tracking__registered_model="'o\"neil'")),
    Case("experiment-too-long", ["train"], r"'tracking\.experiment' must be an MLflow experiment name: 1 to 256",
         params(tracking__experiment="x" * 600)),
    Case("runs-no-such-experiment", ["charrnn", "runs", "--experiment", "no-such-exp"],
         r"there is no experiment 'no-such-exp' in the MLflow store .*mlflow\.db; it holds: 'Default', 'charrnn', 'other'",
         lambda root: _store(root, "charrnn", "other")),
    Case("runs-store-directory-missing", ["charrnn", "runs"], r"MLFLOW_TRACKING_URI=sqlite:////no/such/dir/mlflow\.db: "
         r"the directory /no/such/dir does not exist", env={"MLFLOW_TRACKING_URI": "sqlite:////no/such/dir/mlflow.db"}),
    Case("runs-file-store-missing", ["charrnn", "runs"], r"the directory /no/such/store does not exist",
         env={"MLFLOW_TRACKING_URI": "file:///no/such/store"}),
    Case("generate-registered-no-store", ["charrnn", "generate", "--model", "models:/charrnn/1", "--prompt", "RO"],
         r"no MLflow store at sqlite:///.*/mlruns/mlflow\.db yet"),
    Case("generate-registered-unknown", ["charrnn", "generate", "--model", "models:/charrnn/3", "--prompt", "RO"],
         r"models:/charrnn/3: .*\(store: sqlite:///.*mlflow\.db\)", lambda root: _store(root, "charrnn")),
    Case("init-from-no-store", ["build_vocab"], r"no MLflow store at sqlite:///.*/mlruns/mlflow\.db yet",
         params(train__init_from="'models:/charrnn@base'")),
    Case("init-from-unknown-alias", ["build_vocab"], r"models:/charrnn@nosuch: .*nosuch.* \(store: sqlite:///",
         both(lambda root: _store(root, "charrnn"), params(train__init_from="'models:/charrnn@nosuch'"))),
    Case("init-from-unknown-model", ["build_vocab"], r"models:/nosuch/1: .*nosuch.* \(store: sqlite:///",
         both(lambda root: _store(root, "charrnn"), params(train__init_from="'models:/nosuch/1'"))),
    Case("promote-full-width-digit", ["charrnn", "promote", "１"], r"no version of the registered model 'charrnn' comes from "
         r"'１'", lambda root: _store(root, "charrnn")),
]

# --- the environment ---------------------------------------------------------------------------------
ENVIRONMENT = [
    Case("python-missing", ["download"], r"CHARRNN_PYTHON=/no/such/python is not an executable file",
         env={"CHARRNN_PYTHON": "/no/such/python"}),
    Case("python-a-directory", ["train"], r"CHARRNN_PYTHON=/ is not an executable file", env={"CHARRNN_PYTHON": "/"}),
    Case("generate-to-a-full-disk", [*GEN, ">", "/dev/full"], r"No space left on device"),
    Case("generate-stdout-closed", [*GEN, ">&-"], r"cannot write to standard output: it is closed"),
    Case("tracking-uri-unsupported", ["charrnn", "runs"], r"cannot read the MLflow runs from nosuch://x: .*unsupported URI",
         env={"MLFLOW_TRACKING_URI": "nosuch://x"}),
]

# each class of hostile input the module docstring names, with its cases
CLASSES = {"params": PARAMS, "corpora": CORPORA, "model directories": MODEL_DIRECTORIES, "deep JSON": DEEP_JSON,
           "the CLI": CLI, "MLflow": MLFLOW, "the environment": ENVIRONMENT}
CASES = [case for cases in CLASSES.values() for case in cases]


def _store(root: Path, *experiments: str) -> None:
    """The project's MLflow store, holding these (empty) experiments and a registered model 'charrnn'."""
    from charrnn.tracking import runs

    client = runs.client(runs.tracking_uri(root))
    for name in experiments:
        client.create_experiment(name)
    client.create_registered_model("charrnn")


def _parent(root: Path) -> None:
    """A copy of the trained model at parent/, to fine-tune from."""
    shutil.copytree(root / "data/model", root / "parent")


def _poison(root: Path, value: float) -> None:
    """One weight of the model's weights file overwritten with `value`, in place."""
    import h5py

    with h5py.File(root / "data/model/model.weights.h5", "r+") as f:
        found = []
        f.visititems(lambda name, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
        data = found[-1][()]
        data.flat[0] = value
        found[-1][...] = data


def _run(root: Path, command: list[str], env: dict | None = None, cwd: str = ".") -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CHARRNN_TMPDIR_OWNER")},
           "CHARRNN_TRACKING": "0", **(env or {})}
    if command[0] == "charrnn":
        argv, out, closed = command, None, ">&-" in command
        if ">" in command:
            argv, out = command[:command.index(">")], command[command.index(">") + 1]
        if closed:  # stdout closed, as a shell's `>&-` leaves it
            argv = command[:command.index(">&-")]
        with open(out, "w") if out else open(os.devnull, "w") as stdout:
            return subprocess.run([str(BIN / "charrnn"), *argv[1:]], cwd=root / cwd, env=env, text=True,
                                  stdout=None if closed else stdout if out else subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=300,
                                  preexec_fn=(lambda: os.close(1)) if closed else None)
    return subprocess.run([str(BIN / "python"), f"stages/{command[0]}.py"], cwd=root / cwd, env=env, text=True,
                          capture_output=True, timeout=300)


def snapshot(root: Path) -> dict[str, str]:
    """Every output the pipeline or the CLI could have written or changed."""
    found = {}
    for top in ("data", "metrics", "mlruns"):
        for path in sorted((root / top).rglob("*")) if (root / top).exists() else []:
            if path.is_file() and "cache" not in path.relative_to(root).parts[:2]:
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    if (root / "dvc.lock").exists():
        found["dvc.lock"] = hashlib.sha256((root / "dvc.lock").read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_ends_in_one_clear_error(built, tmp_path, case):
    root = tmp_path / "p"
    shutil.copytree(built.root, root, symlinks=True)
    case.setup(root)
    before = snapshot(root)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = _run(root, case.command, {"TMPDIR": str(tmpdir), **case.env}, case.cwd)
    output = (proc.stdout or "") + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert len(errors) == 1, output[-3000:]
    assert re.search(case.expect, errors[0]), errors[0]  # the error line itself names the problem
    assert snapshot(root) == before, "a failed command changed or left an output"
    assert sorted(p.name for p in tmpdir.iterdir()) == [], "a failed command left files in TMPDIR"


def _copy(built, tmp_path) -> Path:
    root = tmp_path / "p"
    shutil.copytree(built.root, root, symlinks=True)
    return root


def test_evaluate_reports_the_unk_fraction_and_warns_past_five_percent(built, tmp_path):
    root = _copy(built, tmp_path)
    text = shakespeare_like(3_000)
    (root / "odd.txt").write_text("".join("¤" if i % 10 == 0 else c for i, c in enumerate(text)), encoding="utf-8")
    proc = _run(root, ["charrnn", "evaluate", "--text", "odd.txt"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (warning,) = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert "10.0% of odd.txt's characters (read as utf-8) are not in the vocabulary of data/model" in warning
    assert json.loads(proc.stdout)["unk_fraction"] == pytest.approx(0.1, abs=0.001)
    clean = _run(root, ["charrnn", "evaluate", "--text", "corpus-src.txt"])
    assert clean.returncode == 0 and "warning:" not in clean.stderr and json.loads(clean.stdout)["unk_fraction"] == 0.0


def test_copy_metrics_over_no_ngram_are_null_with_their_reason(built, tmp_path):
    root = _copy(built, tmp_path)
    params(sample__copy_ngram=1000)(root)
    proc = _run(root, ["sample"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((root / "metrics/samples.json").read_text(encoding="utf-8"))
    unmeasured = json.loads((root / "data/sampling.json").read_text(encoding="utf-8"))["unmeasured"]
    assert metrics["copied_frac_1000"] is None and metrics["ngrams_1000"] == 0
    assert "no 1000-gram to measure: the longest sample holds 40 character(s)" in unmeasured["copied_frac_1000"]
    assert metrics["copied_frac_50"] is None and set(unmeasured) == {"copied_frac_1000", "copied_frac_50"}
    assert all(isinstance(v, (int, float)) or v is None for v in metrics.values())  # numbers only
    assert 0 < metrics["distinct_4"] <= 1 and metrics["longest_copied"] > 0  # measured over the 40 characters
    assert "warning: copied_frac_1000 is null: no 1000-gram" in proc.stderr
    shown = subprocess.run([str(BIN / "dvc"), "metrics", "show", "metrics/samples.json", "--json"], cwd=root,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)[""]["data"]["metrics/samples.json"]["data"]["ngrams_1000"] == 0
    outputs = _run(root, ["charrnn", "outputs"])
    assert outputs.returncode == 0 and "copying not measured (no 1000-gram to measure" in outputs.stdout, outputs.stderr


def test_every_class_the_docstring_names_has_cases_of_its_own():
    named = __doc__.split("in classes: ", 1)[1].split(".", 1)[0].replace("\n", " ").replace(" and ", ", ")
    assert [c.strip() for c in named.split(",")] == list(CLASSES)
    assert all(len(cases) >= 3 for cases in CLASSES.values()), {k: len(v) for k, v in CLASSES.items()}
    assert len({case.id for case in CASES}) == len(CASES) >= 100  # no case shadows another


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["generate", "--prompt", "a", "--top-k", "-1"],
                                  ["serve", "--max-batch", "0"], ["evaluate", "--threads", "-1"]])
def test_help_and_a_bad_option_answer_without_loading_tensorflow(argv):
    """Seconds of TensorFlow import before a one-line answer: the option rules come first."""
    code = ("import sys, runpy; sys.argv = ['charrnn', *sys.argv[1:]]\n"
            "sys.modules['tensorflow'] = None  # importing it now raises ImportError\n"
            "runpy.run_module('charrnn.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "tensorflow" not in done.stderr.lower() and "bug" not in done.stderr, done.stderr[-2000:]
    if "--help" in argv:
        assert done.returncode == 0 and "usage: charrnn" in done.stdout
    else:
        assert done.returncode == 1 and done.stderr.startswith("error: "), done.stderr[-2000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB file system at tmp_path/disk."""
    with tmpfs(tmp_path / "disk", "64k") as disk:
        yield disk


def test_a_full_disk_while_writing_an_output_is_one_error_and_leaves_nothing(built, tmp_path, small_disk):
    root = tmp_path / "p"
    shutil.copytree(built.root, root, symlinks=True)
    (root / "big.txt").write_text(shakespeare_like(400_000), encoding="utf-8")
    params(data__source="big.txt")(root)
    shutil.rmtree(root / "data" / "raw")
    (root / "data" / "raw").symlink_to(small_disk)
    proc = _run(root, ["download"])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    (error,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert "No space left on device" in error and "free some space" in error
    assert list(small_disk.iterdir()) == []  # no half-written corpus, no temporary left behind
