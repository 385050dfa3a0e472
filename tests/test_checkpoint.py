"""A training killed mid-epoch resumes from its last backup and ends with the same model."""
import numpy as np
import pytest

from charrnn.core.params import TrainParams
from charrnn.nn import training
from charrnn.nn.checkpoint import STATE
from tests.kit import kill_at

TEXT = "to be or not to be, that is the question.\n" * 60 + "whether 'tis nobler in the mind to suffer\n" * 60


@pytest.fixture
def data(make_records):
    return make_records(TEXT)


PARAMS = TrainParams(embedding_dim=8, units=24, epochs=3, batch_size=16, learning_rate=0.01, dropout=0.1,
                     schedule="cosine", warmup_steps=5, random_offset=True)


def run(data, backup_dir=None, params=PARAMS):
    training.configure(params.seed)
    return training.train(params, str(data[0]), data[1], backup_dir=backup_dir)


def test_resumed_training_equals_the_uninterrupted_one(data, tmp_path, monkeypatch):
    whole = run(data)
    backup = tmp_path / "backup"
    with monkeypatch.context() as m:
        kill_at(m, epoch=2, batch=3)
        with pytest.raises(KeyboardInterrupt):
            run(data, backup)
    assert (backup / STATE).is_file()
    resumed = run(data, backup)
    assert resumed.checkpoints.rows[0] == whole.checkpoints.rows[0]  # epoch 1 came from the backup
    assert list(resumed.throughput["epoch"]) == [2, 3]  # only epochs 2 and 3 ran again
    assert resumed.history.equals(whole.history)
    assert resumed.summary == whole.summary
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        assert np.array_equal(a, b)
    resumed.checkpoints.clear()
    assert not backup.exists()


def test_a_backup_of_other_params_is_not_resumed(data, tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    with monkeypatch.context() as m:
        kill_at(m, epoch=2, batch=1)
        with pytest.raises(KeyboardInterrupt):
            run(data, backup)
    other = run(data, backup, params=TrainParams(**{**PARAMS.__dict__, "units": 16}))
    assert list(other.throughput["epoch"]) == [1, 2, 3]  # started from zero


def test_killed_after_the_last_epoch_finishes_without_training_again(data, tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    first = run(data, backup)  # ends normally, but the backup is not cleared: as if killed before the outputs
    again = run(data, backup)
    assert again.throughput.empty and again.history.equals(first.history)
    for a, b in zip(first.model.get_weights(), again.model.get_weights()):
        assert np.array_equal(a, b)
