import pytest

from charrnn.params import Params, ParamsError


def test_defaults_and_flat_keys():
    p = Params.from_dict({})
    flat = p.flat()
    assert flat["train.units"] == p.train.units
    assert flat["seq_length"] == 100
    assert "sample.prompts" in flat


def test_repo_params_file_loads():
    p = Params.load("params.yaml")
    assert p.data.source == "shakespeare"


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
    assert "'train.epochs' must be int, got '3'" in msg
    assert "'sample.temperature' must be > 0" in msg
    assert "'data.val_fraction' must be strictly between 0 and 1" in msg
    assert "'seq_length' must be > 0, got 0" in msg


def test_bool_is_not_an_int():
    with pytest.raises(ParamsError, match="'train.units' must be int, got True"):
        Params.from_dict({"train": {"units": True}})


def test_list_of_strings():
    assert Params.from_dict({"sample": {"prompts": ["a", "b"]}}).sample.prompts == ["a", "b"]
    with pytest.raises(ParamsError, match="sample.prompts"):
        Params.from_dict({"sample": {"prompts": "ROMEO:"}})
    with pytest.raises(ParamsError, match="must not be empty"):
        Params.from_dict({"sample": {"prompts": []}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        Params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        Params.load(bad)


def test_sha256_format():
    with pytest.raises(ParamsError, match="sha256"):
        Params.from_dict({"data": {"sha256": "abc"}})
    assert Params.from_dict({"data": {"sha256": "a" * 64}}).data.sha256 == "a" * 64
