import numpy as np
import pytest

from charrnn.core.params import TrainParams
from charrnn.data import records
from charrnn.data.vocab import Vocabulary, count_chars
from charrnn.nn import training

TEXT = "to be or not to be, that is the question.\n" * 120


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    vocab = Vocabulary.from_counts(count_chars([TEXT]))
    records.write_records(path, vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1)
    return tmp_path / "rec", vocab


def fit(data, **overrides):
    records_dir, vocab = data
    params = TrainParams(**{"embedding_dim": 8, "units": 32, "epochs": 3, "batch_size": 16, "learning_rate": 0.01,
                            "schedule": "constant", "warmup_steps": 0, "random_offset": False, **overrides})
    training.configure(params.seed)
    seen = []
    result = training.train(params, str(records_dir), vocab, on_epoch=lambda e, m: seen.append((e, m)))
    return result, seen


def test_training_learns_and_reports_each_epoch(data):
    result, seen = fit(data)
    h = result.history
    assert list(h.columns) == ["epoch", "loss", "val_loss"] and h["epoch"].tolist() == [1, 2, 3]
    assert h["loss"].iloc[-1] < h["loss"].iloc[0] and h["val_loss"].iloc[-1] < h["val_loss"].iloc[0]
    assert [e for e, _ in seen] == [1, 2, 3]
    assert set(seen[0][1]) == {"loss", "val_loss", "learning_rate", "seconds", "chars_per_sec"}  # epoch: the step
    assert seen[0][1]["learning_rate"] == pytest.approx(0.01)
    assert result.summary["train_chars_per_epoch"] == ((len(TEXT) * 9 // 10 - 1) // 20) * 20
    assert (result.throughput["chars_per_sec"] > 0).all()


def test_same_seed_same_losses(data):
    a, _ = fit(data, epochs=2, cell="lstm")
    b, _ = fit(data, epochs=2, cell="lstm")
    assert np.array_equal(a.history.to_numpy(), b.history.to_numpy())
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        assert np.array_equal(wa, wb)


def test_records_from_another_vocabulary_are_refused(data):
    records_dir, _ = data
    other = Vocabulary.from_counts(count_chars(["xyz"]))
    with pytest.raises(training.TrainingError, match="another vocabulary"):
        training.train(TrainParams(), str(records_dir), other)
