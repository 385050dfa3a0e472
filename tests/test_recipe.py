"""The training recipe: schedule values, optimizer settings, best-epoch restore, seeded offsets."""
import keras
import numpy as np
import pytest

from charrnn.core.params import TrainParams
from charrnn.data import reader
from charrnn.nn import recipe, training


def rate_at(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


CONSTANT = {"schedule": "constant", "warmup_steps": 0, "clipnorm": 0.0}  # the defaults are the cosine recipe


def test_constant_rate_without_warmup_is_a_plain_float():
    assert recipe.learning_rate(TrainParams(**{**CONSTANT, "learning_rate": 0.003}), total_steps=100) == 0.003


def test_warmup_then_constant():
    s = recipe.learning_rate(TrainParams(**{**CONSTANT, "learning_rate": 0.004, "warmup_steps": 10}), total_steps=100)
    assert [rate_at(s, t) for t in (0, 5, 10, 50, 99)] == pytest.approx([0.0, 0.002, 0.004, 0.004, 0.004])


def test_warmup_then_cosine_down_to_the_floor():
    s = recipe.learning_rate(TrainParams(learning_rate=0.004, warmup_steps=10, schedule="cosine"), total_steps=110)
    assert rate_at(s, 5) == pytest.approx(0.002)
    assert rate_at(s, 10) == pytest.approx(0.004)
    midway = 0.004 * (recipe.COSINE_FLOOR + (1 - recipe.COSINE_FLOOR) * 0.5)  # half the cosine
    assert rate_at(s, 60) == pytest.approx(midway, rel=1e-5)
    assert rate_at(s, 110) == pytest.approx(0.004 * recipe.COSINE_FLOOR)
    rates = [rate_at(s, t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never rises after the warm-up


def test_optimizer_clipping_and_weight_decay():
    plain = recipe.optimizer(TrainParams(**CONSTANT), total_steps=10)
    assert type(plain) is keras.optimizers.Adam and plain.global_clipnorm is None
    tuned = recipe.optimizer(TrainParams(weight_decay=0.01), total_steps=10)  # clipnorm 1.0: the default
    assert isinstance(tuned, keras.optimizers.AdamW)
    assert tuned.global_clipnorm == 1.0 and tuned.weight_decay == 0.01
    bias, kernel = keras.Variable(np.zeros(3), name="bias"), keras.Variable(np.zeros((3, 3)), name="kernel")
    tuned.build([bias, kernel])
    assert not tuned._use_weight_decay(bias) and tuned._use_weight_decay(kernel)


@pytest.fixture
def data(make_records):
    # a training text the model can memorise, and a held-out tail it cannot: val_loss turns up
    rng = np.random.default_rng(0)
    return make_records("the cat sat on the mat. " * 60 + "".join(rng.choice(list("the cat sat on mat."), 400)),
                        seq_length=16, val_fraction=0.25)


def fit(data, **overrides):
    records_dir, vocab = data
    params = TrainParams(**{"embedding_dim": 8, "units": 48, "epochs": 8, "batch_size": 8,
                            "learning_rate": 0.02, **overrides})
    training.configure(params.seed)
    return training.train(params, str(records_dir), vocab), records_dir


def held_out(result, records_dir) -> float:
    return float(result.model.evaluate(reader.dataset(records_dir, "val", 8), verbose=0))


def test_the_kept_model_is_the_best_epoch(data):
    result, records_dir = fit(data)
    val = result.history["val_loss"].to_numpy()
    best = int(np.argmin(val))
    assert best < len(val) - 1, "the fixture should overfit: val_loss must turn up"
    assert result.summary["best_epoch"] == result.summary["model_epoch"] == best + 1
    assert result.summary["val_loss"] == pytest.approx(val[best])
    assert held_out(result, records_dir) == pytest.approx(val[best], rel=1e-5)


def test_patience_stops_early_and_last_epoch_kept_when_asked(data):
    stopped, _ = fit(data, patience=1)
    val = stopped.history["val_loss"].to_numpy()
    assert len(val) < 8 and len(val) == int(np.argmin(val)) + 2  # one epoch without progress
    last, records_dir = fit(data, restore_best=False, epochs=4)
    assert last.summary["model_epoch"] == 4
    assert held_out(last, records_dir) == pytest.approx(last.history["val_loss"].iloc[-1], rel=1e-5)


def test_random_offsets_are_seeded_and_cut_the_same_text(tmp_path, make_records):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(3000))
    _, vocab = make_records(text)
    ids = vocab.encode(text)
    offsets = [reader.epoch_offset(5, e, 20) for e in range(6)]
    assert offsets == [reader.epoch_offset(5, e, 20) for e in range(6)]  # seeded
    assert len(set(offsets)) > 1 and all(0 <= o < 20 for o in offsets)
    per_epoch = reader.batches_per_epoch(tmp_path / "rec", "train", 8, random_offset=True)
    batches = [np.concatenate([x, y[:, -1:]], axis=1) for x, y in
               reader.dataset(tmp_path / "rec", "train", 8, shuffle_seed=5, epochs=2, random_offset=True)]
    for epoch in range(2):
        windows = np.concatenate(batches[epoch * per_epoch:(epoch + 1) * per_epoch])
        starts = sorted(offsets[epoch] + 20 * i for i in range(len(windows)))
        expected = sorted(ids[s:s + 21].tobytes() for s in starts)
        assert sorted(w.astype(ids.dtype).tobytes() for w in windows) == expected
