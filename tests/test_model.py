import json

import numpy as np
import pytest

from charrnn.nn import modeldir, network
from charrnn.nn.modeldir import ModelError
from tests.kit import VOCAB, tiny_model


def tiny(cell="gru", layers=2, vocab=VOCAB):
    """A model of the kit's and its vocabulary."""
    return tiny_model(vocab, cell=cell, layers=layers), vocab


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_state_carried_across_windows_equals_one_pass(cell):
    model, vocab = tiny(cell)
    ids = np.random.default_rng(0).integers(1, vocab.size, size=(3, 24)).astype("int32")
    whole = model(ids).numpy()
    states, parts = None, []
    for start in range(0, 24, 8):
        logits, states = model(ids[:, start:start + 8], states, return_state=True)
        parts.append(logits.numpy())
    assert np.allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)
    assert len(states) == 2 and len(states[0]) == (1 if cell == "gru" else 2)


def test_initial_states_match_none():
    model, vocab = tiny("lstm")
    ids = np.ones((2, 5), dtype="int32")
    a = model(ids).numpy()
    b = model(ids, model.initial_states(2), return_state=True)[0].numpy()
    assert np.allclose(a, b)


def test_a_model_grown_from_a_parent_keeps_its_weights_and_fresh_rows_for_new_ids():
    from charrnn.data.vocab import Vocabulary, count_chars

    parent = tiny_model(VOCAB, seed=1)
    wider = VOCAB.extended(count_chars(["xyz"]))
    model = tiny_model(wider, seed=2)
    fresh = [w.copy() for w in model.get_weights()]
    network.grow_from(model, parent)
    old, new = parent.get_weights(), model.get_weights()
    n = VOCAB.size
    np.testing.assert_array_equal(new[0][:n], old[0][:n])  # embedding rows of the parent's ids
    np.testing.assert_array_equal(new[0][n:], fresh[0][n:])  # the new ids' rows as initialised
    np.testing.assert_array_equal(new[-2][:, :n], old[-2])  # output kernel columns
    np.testing.assert_array_equal(new[-2][:, n:], fresh[-2][:, n:])
    np.testing.assert_array_equal(new[-1][:n], old[-1])  # output bias
    for a, b in zip(new[1:-2], old[1:-2]):  # the GRU: the parent's
        np.testing.assert_array_equal(a, b)
    ids = np.array([VOCAB.encode("ROMEO: abba")])
    np.testing.assert_allclose(model(ids).numpy()[..., :n], parent(ids).numpy(), atol=1e-6)  # same scores for old ids
    assert wider.size == n + 3 and isinstance(wider, Vocabulary)


def test_save_load_round_trip(tmp_path):
    model, vocab = tiny("gru", layers=1)
    network.save(model, vocab, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.weights.h5", "vocab.json"]
    again, again_vocab = network.load(tmp_path / "m")
    ids = np.arange(1, vocab.size, dtype="int32")[None, :]
    assert np.array_equal(again(ids).numpy(), model(ids).numpy())
    assert again_vocab == vocab


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, vocab = tiny("lstm", layers=2)
    path = tmp_path_factory.mktemp("saved") / "m"
    network.save(model, vocab, path)
    return path


def broken(saved, tmp_path, edit):
    """A copy of the saved model directory with `edit(path)` applied."""
    import shutil

    path = tmp_path / "m"
    shutil.copytree(saved, path)
    edit(path)
    return path


def edit_config(**changes):
    def edit(path):
        config = json.loads((path / "config.json").read_text())
        config.update(changes)
        (path / "config.json").write_text(json.dumps(config))
    return edit


def poison(path, value, which: int):
    """Write `value` into one element of the `which`-th float dataset of the weights file, in place."""
    import h5py

    with h5py.File(path / "model.weights.h5", "r+") as f:
        found = []
        f.visititems(lambda name, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
        dataset = found[which]
        data = dataset[()]
        data.flat[data.size // 2] = value
        dataset[...] = data


def edit_vocab(path, **changes):
    vocab = json.loads((path / "vocab.json").read_text())
    (path / "vocab.json").write_text(json.dumps({**vocab, **changes}))


@pytest.mark.parametrize("edit,match", [
    (lambda p: (p / "config.json").unlink(), "no trained model here .*run `dvc repro train`"),
    (lambda p: (p / "vocab.json").unlink(), "vocab.json is missing"),
    (lambda p: (p / "model.weights.h5").unlink(), "model.weights.h5 is missing"),
    (lambda p: (p / "config.json").write_text("{not json"), "config.json: not valid JSON"),
    (lambda p: (p / "config.json").write_text("[1, 2]"), "expected a JSON object"),
    (edit_config(units=10**9), r"does not match model.weights.h5: the config \(.*units=1000000000"),
    (edit_config(units=-4), "'units' must be > 0, got -4"),
    (edit_config(units="16"), "'units' must be an integer, got '16'"),
    (edit_config(cell="transformer"), "'cell' must be 'gru' or 'lstm'"),
    (edit_config(layers=0), "'layers' must be an integer from 1 to 64"),
    (edit_config(colour="red"), "unknown keys \\['colour'\\]"),
    (lambda p: (p / "model.weights.h5").write_bytes(b"garbage" * 100), "model.weights.h5 is not a readable weights file"),
    (lambda p: (p / "model.weights.h5").write_bytes((p / "model.weights.h5").read_bytes()[:3000]),
     "model.weights.h5 is not a readable weights file"),
    (lambda p: (p / "vocab.json").write_bytes(b'{"format": 1, "unk": "[UNK]", "chars": ["\xff"], "counts": [1]}'), "not a charrnn vocabulary"),
    (lambda p: (p / "vocab.json").write_text('{"format": 1, "unk": "[UNK]", "chars": ["\\ud800"], "counts": [1]}'), "no lone surrogates"),
    (lambda p: (p / "vocab.json").write_text('{"format": 1, "unk": "[UNK]", "chars": ["a", "a"], "counts": [1, 1]}'), "must be distinct"),
    (lambda p: (p / "vocab.json").write_text('{"format": 1, "unk": "[UNK]", "chars": ["x", "y"], "counts": [1, 1]}'),
     "vocab.json is not the vocabulary .* was trained with"),
    (lambda p: poison(p, np.nan, 0), r"model\.weights\.h5 holds NaN or infinite values \(in .*\): the file is damaged"),
    (lambda p: poison(p, -np.inf, -1), r"model\.weights\.h5 holds NaN or infinite values"),
    (lambda p: (p / "config.json").write_text("[" * 10_000 + "]" * 10_000), "config.json: not valid JSON .*nested"),
    (lambda p: (p / "vocab.json").write_text('{"a": ' * 5000 + "1" + "}" * 5000), "vocab.json: not a charrnn .*nested"),
    (lambda p: edit_vocab(p, unk=None), r"'unk' \(what id 0 stands for\) must be '\[UNK\]'"),
    (lambda p: edit_vocab(p, format=0), r"'format' is 0; this charrnn reads format 1 only"),
])
def test_a_broken_model_directory_is_one_clear_error(saved, tmp_path, edit, match):
    path = broken(saved, tmp_path, edit)
    with pytest.raises(ModelError, match=match):
        modeldir.read(path)
    with pytest.raises(ModelError, match=match):
        network.load(path)


def test_a_missing_directory_or_a_file_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="does not exist: give the directory a trained model was saved to"):
        network.load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file, not a model directory"):
        network.load(tmp_path / "file")
    with pytest.raises(ModelError, match="no trained model here"):
        network.load(tmp_path)
