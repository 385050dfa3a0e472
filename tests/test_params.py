"""params.py: the one reader of params.yaml, read as DVC reads it, with the documented defaults."""
import dataclasses
import math
import subprocess

import pytest
import yaml
from dvc.utils.serialize import parse_yaml as dvc_parse_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.core.params import Params, ParamsError, flatten, parse_yaml, problem
from tests.project import REPO


def shipped_params_yaml() -> str:
    """params.yaml as the code's defaults ship it, not as a user's experiments changed it: the file
    at the last commit that changed core/params.py (a default changes in both files in one commit);
    the working file while core/params.py has uncommitted changes, or outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)

    edited = git("status", "--porcelain", "--", "src/charrnn/core/params.py")
    commit = git("log", "-1", "--format=%H", "--", "src/charrnn/core/params.py").stdout.strip()
    if edited.returncode != 0 or edited.stdout.strip() or not commit:
        return (REPO / "params.yaml").read_text()
    return git("show", f"{commit}:params.yaml").stdout


def test_the_code_defaults_are_params_yaml(tmp_path):
    """One source of truth: a missing key can only mean the documented value. The suite tests the
    code: a user's own params.yaml, committed or not, is not compared."""
    text = shipped_params_yaml()
    (tmp_path / "params.yaml").write_text(text)
    assert Params.load(tmp_path / "params.yaml") == Params()
    raw = dvc_parse_yaml(text, "params.yaml")
    assert flatten(Params()) == {k: v for k, v in _flatten_dict(raw).items()}


def _flatten_dict(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flatten_dict(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_every_key_must_be_in_the_file(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("  patience: 0", "").replace("  min_count: 1", "")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError) as e:
        Params.load(tmp_path / "params.yaml")
    assert e.value.problems == [
        "missing key 'vocab.min_count' (every key must be in the file; the default is 1)",
        "missing key 'train.patience' (every key must be in the file; the default is 0)",
    ]


def test_numbers_are_read_as_dvc_reads_them(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("learning_rate: 0.002", "learning_rate: 1e-3")
    (tmp_path / "params.yaml").write_text(text)
    assert Params.load(tmp_path / "params.yaml").train.learning_rate == 0.001
    assert yaml.safe_load("x: 1e-3")["x"] == "1e-3"  # what PyYAML (YAML 1.1) would have made of it


SCALARS = st.one_of(
    st.sampled_from(["1e-3", "1E3", "yes", "no", "on", "off", "True", "~", "null", ".inf", "-.inf", ".nan", "0o12",
                     "012", "0x1F", "1_000", "2026-11-23", "3.0", "'3'", '"x"', "[1, 2]", "{}", "0.1", "-1"]),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=False).map(repr),
    st.text(alphabet="ab:{}[]-#'\" .eE019_", max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(value=SCALARS)
def test_any_scalar_is_parsed_exactly_as_dvc_parses_it(value):
    text = f"train:\n  learning_rate: {value}\n"
    try:
        ours = parse_yaml(text)
    except ParamsError:
        with pytest.raises(Exception):
            dvc_parse_yaml(text, "params.yaml")
        return
    theirs = dvc_parse_yaml(text, "params.yaml")
    assert repr(ours) == repr(theirs)  # repr: nan == nan, and 1 vs 1.0 vs True told apart


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.integers(-10**30, 10**30), st.floats(), st.booleans(), st.none(), st.text(max_size=5),
                       st.lists(st.integers(), max_size=2)))
def test_a_value_is_accepted_exactly_when_its_rule_holds(value):
    """For a few params of each kind: from_dict accepts a value iff problem() finds nothing,
    and an accepted value is finite and in range."""
    for key in ("train.units", "train.learning_rate", "train.seed", "sample.temperature", "sample.top_p",
                "data.val_fraction", "train.restore_best"):
        section, name = key.split(".")
        wrong = problem(key, value)
        try:
            params = Params.from_dict({section: {name: value}})
        except ParamsError as e:
            assert wrong is not None and wrong in str(e)
            continue
        assert wrong is None
        got = getattr(getattr(params, section), name)
        if isinstance(got, float):
            assert math.isfinite(got)


@pytest.mark.parametrize("value, ok", [
    ("", True), ("models:/base@champion", True), ("models:/base/3", True), ("models/base", True),
    ("data/model", True), ("models:/base", False), ("models:/base/v3", False), ("models:/a/b@c", False),
    (" models/base", False), ("models/\tbase", False)])
def test_init_from_is_empty_a_path_or_a_registered_model_uri(value, ok):
    assert (problem("train.init_from", value) is None) == ok, value


def test_int_is_accepted_for_float():
    p = Params.from_dict({"train": {"learning_rate": 1}})
    assert p.train.learning_rate == 1.0 and isinstance(p.train.learning_rate, float)


def test_all_problems_reported_at_once():
    with pytest.raises(ParamsError) as e:
        Params.from_dict({
            "seq_length": 0,
            "trian": {},
            "train": {"units": 0, "cell": "rnn", "epochs": "3", "learning_rat": 0.1},
            "sample": {"temperature": 0},
            "data": {"val_fraction": 1.0},
        })
    msg = str(e.value)
    assert len(e.value.problems) == 8
    assert "unknown key 'trian' (did you mean 'train'?)" in msg
    assert "unknown key 'train.learning_rat' (did you mean 'train.learning_rate'?)" in msg
    assert "'train.units' must be > 0, got 0" in msg
    assert "'train.cell' must be 'gru' or 'lstm'" in msg
    assert "'train.epochs' must be an integer, got '3'" in msg
    assert "'sample.temperature' must be a number from 1e-06 to 100" in msg
    assert "'data.val_fraction' must be strictly between 0 and 1" in msg
    assert "'seq_length' must be an integer from 1 to 100000, got 0" in msg


@pytest.mark.parametrize("raw,message", [
    ({"train": {"seed": -1}}, "'train.seed' must be an integer from 0 to 2147483647, got -1"),
    ({"sample": {"seed": 10**20}}, "'sample.seed' must be an integer from 0 to 2147483647"),
    ({"sample": {"temperature": 1.0e-50}}, "'sample.temperature' must be a number from 1e-06 to 100"),
    ({"data": {"encoding": "base64"}}, "'data.encoding' must name a text encoding"),
    ({"data": {"encoding": "rot13"}}, "'data.encoding' must name a text encoding"),
    ({"data": {"encoding": "klingon"}}, "'data.encoding' must name a text encoding"),
    ({"train": {"learning_rate": float("inf")}}, "'train.learning_rate' must be a finite number, got inf"),
    ({"train": {"clipnorm": float("nan")}}, "'train.clipnorm' must be a finite number"),
    ({"train": {"units": True}}, "'train.units' must be an integer, got True"),
    ({"train": {"epochs": 10**6}}, "'train.epochs' must be an integer from 1 to 1000"),
    ({"train": {"threads": 10**6}}, "'train.threads' must be an integer from 0 to 1024"),
    ({"sample": {"prompts": "ROMEO:"}}, "'sample.prompts' must be a list of strings"),
    ({"sample": {"prompts": ["ok", ""]}}, "'sample.prompts' must be a list of at most 1024 non-empty strings"),
    ({"sample": {"prompts": ["\ud800"]}}, "valid Unicode"),
    ({"sample": {"num_chars": 4294967306}}, "'sample.num_chars' must be an integer from 1 to 1000000"),
    ({"sample": {"top_p": 0}}, "'sample.top_p' must be > 0 and <= 1"),
    ({"sample": {"temperature_grid": [0.5, 0]}}, "'sample.temperature_grid' must hold temperatures"),
    ({"data": {"source": " "}}, "'data.source' must not be empty"),
    ({"train": []}, "train must be a mapping of keys to values, got []"),
    ({"tracking": {"registered_model": "team/charrnn"}}, "'tracking.registered_model' must be a registered-model name"),
    ({"tracking": {"registered_model": "charrnn@v2"}}, "none of / : @ ' \" `"),
    ({"tracking": {"registered_model": 'say "hi"'}}, "a models:/ URI can address"),
    ({"tracking": {"registered_model": "r" * 257}}, "1 to 256 printable characters"),
    ({"tracking": {"registered_model": "line\nbreak"}}, "'tracking.registered_model' must be"),
    ({"tracking": {"registered_model": "..up"}}, "not starting with '..'"),
    ({"tracking": {"experiment": "e" * 300}}, "'tracking.experiment' must be an MLflow experiment name: 1 to 256"),
    ({"tracking": {"experiment": "trailing "}}, "no blank at either end"),
])
def test_hostile_values_are_named(raw, message):
    with pytest.raises(ParamsError) as e:
        Params.from_dict(raw)
    assert message in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        Params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    for text in ("train: [unclosed\n", "a: 1\na: 2\n"):
        bad.write_text(text)
        with pytest.raises(ParamsError, match="not valid YAML"):
            Params.load(bad)
    bad.write_bytes(b"train:\n  cell: \xff\n")
    with pytest.raises(ParamsError, match="cannot be read"):
        Params.load(bad)
    with pytest.raises(ParamsError, match="cannot be read"):
        Params.load(tmp_path)


def test_sha256_format():
    with pytest.raises(ParamsError, match="sha256"):
        Params.from_dict({"data": {"sha256": "abc"}})
    assert Params.from_dict({"data": {"sha256": "a" * 64}}).data.sha256 == "a" * 64


def test_flat_keys_cover_every_field():
    flat = Params().flat()
    assert flat["train.units"] == 512 and flat["seq_length"] == 100 and flat["sample.prompts"] == []
    assert len(flat) == sum(len(dataclasses.fields(getattr(Params(), f.name))) if dataclasses.is_dataclass(
        getattr(Params(), f.name)) else 1 for f in dataclasses.fields(Params))
