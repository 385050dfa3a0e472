import numpy as np
import pytest

from charrnn import model as model_lib
from charrnn.vocab import Vocabulary, count_chars


def tiny(cell="gru", layers=2, vocab=None):
    vocab = vocab or Vocabulary.from_counts(count_chars(["abcdefgh\n "]))
    config = model_lib.ModelConfig(vocab_size=vocab.size, embedding_dim=8, units=16, layers=layers,
                                   cell=cell, vocab_fingerprint=vocab.fingerprint)
    return model_lib.build(config), vocab


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


def test_save_load_round_trip(tmp_path):
    model, vocab = tiny("gru", layers=1)
    model_lib.save(model, vocab, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.weights.h5", "vocab.json"]
    again = model_lib.load(tmp_path / "m")
    ids = np.arange(1, vocab.size, dtype="int32")[None, :]
    assert np.array_equal(again(ids).numpy(), model(ids).numpy())
    assert model_lib.load_vocab(tmp_path / "m") == vocab


def test_vocabulary_mismatch_is_caught_by_fingerprint(tmp_path):
    model, vocab = tiny()
    model_lib.save(model, vocab, tmp_path / "m")
    other = Vocabulary.from_counts(count_chars(["xyz"]))
    with pytest.raises(model_lib.ModelError, match="different vocabulary"):
        model_lib.load(tmp_path / "m", other)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(model_lib.ModelError, match="no trained model here"):
        model_lib.load(tmp_path)
