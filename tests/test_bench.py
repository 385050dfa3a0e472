"""The benchmark harness itself: the stand-in text and the tutorial reference run (tiny sizes)."""
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import reference  # noqa: E402


def test_generated_text_has_tiny_shakespeares_alphabet():
    text = common.generated_text(20_000, seed=1)
    assert len(text) == 20_000 and set(text) == set(common.ALPHABET) and len(common.ALPHABET) == 65
    assert text == common.generated_text(20_000, seed=1)


def test_reference_trains_and_generates():
    text = common.generated_text(5_000)
    ids_from_chars, chars_from_ids = reference.lookups(text)
    ds = reference.dataset(text, ids_from_chars, seq_length=20, batch_size=4, seed=0)
    x, y = next(iter(ds))
    assert x.shape == (4, 20) and y.shape == (4, 20)
    model = reference.build(len(ids_from_chars.get_vocabulary()), 8, 16)
    model.fit(ds.take(2), epochs=1, verbose=0)
    one_step = reference.OneStep(model, chars_from_ids, ids_from_chars)
    out = reference.generate(one_step, ["ab", "c"], 7)
    assert [len(s) for s in out] == [9, 8] and "[UNK]" not in "".join(out)


def test_stateful_batches_continue_each_stream():
    import numpy as np
    import stateful

    ids = np.arange(10_000, dtype=np.int32)
    batches = list(stateful.stream_batches(ids, 10, 4, steps=50, rng=np.random.default_rng(0)))
    assert len(batches) == 50
    for (x, y), (x_next, _) in zip(batches, batches[1:]):
        assert x.shape == y.shape == (4, 10) and (y[:, :-1] == x[:, 1:]).all()
        assert (x_next[:, 0] == x[:, -1] + 1).all()  # each row goes on where it stopped
    offsets = {int(next(stateful.stream_batches(ids, 10, 4, 1, np.random.default_rng(s)))[0][0, 0]) for s in range(20)}
    assert len(offsets) > 1 and all(0 <= o < 10 for o in offsets)


def test_window_batches_are_shuffled_shifted_windows():
    import numpy as np
    import stateful

    ids = np.arange(10_000, dtype=np.int32)
    batches = list(stateful.window_batches(ids, 10, 4, steps=20, rng=np.random.default_rng(0)))
    starts = np.concatenate([x[:, 0] for x, _ in batches])
    assert len(batches) == 20 and len(set(starts % 10)) == 1  # one offset per epoch
    assert (np.diff(starts) != 10).any()  # not in text order
    assert all((y == x + 1).all() for x, y in batches)


def test_quality_table_names_each_rows_overrides():
    import quality

    rows = [{"label": "plain", "keep": True, "overrides": {"train.epochs": "12"}, "seconds": 661.0, "loss": 1.52,
             "bpc": 2.19, "best_epoch": 12, "epochs": 12},
            {"label": "+ offsets", "keep": True, "overrides": {"train.random_offset": "true"}, "seconds": 650.0, "loss": 1.50,
             "bpc": 2.16, "best_epoch": 11, "epochs": 12}]
    lines = quality.table(rows).splitlines()
    assert "`-S train.epochs=12`" in lines[2] and "11 min 01 s" in lines[2]
    assert "`-S train.random_offset=true`" in lines[3] and "-0.0200" in lines[3] and "11 of 12" in lines[3]


def test_quality_alternatives_compare_with_the_recipe_not_each_other():
    import quality

    def row(label, keep, loss):
        return {"label": label, "keep": keep, "overrides": {}, "seconds": 600.0, "loss": loss, "bpc": 2.0,
                "best_epoch": 12, "epochs": 12}

    lines = quality.table([row("plain", True, 1.50), row("recipe", True, 1.48),
                           row("dropout", False, 1.49), row("decay", False, 1.47)]).splitlines()
    assert "+0.0100" in lines[4] and "-0.0100" in lines[5]  # each against 1.48, not against 1.49
    assert "-0.0300" in lines[5]  # and against the first row
