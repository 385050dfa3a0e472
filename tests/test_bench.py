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


def test_a_change_is_a_gain_only_beyond_two_standard_errors():
    import quality

    def row(losses):
        return quality.summary([{"loss": x, "seconds": 600.0, "copied_frac_20": 0.01, "longest_copied": 20,
                                 "best_epoch": 12} for x in losses])

    base = row([1.480, 1.482, 1.484])  # mean 1.482, sd 0.002
    assert quality.verdict(row([1.470, 1.471, 1.472]), base).endswith("gain")  # -0.011, 2 se = 0.0037
    assert quality.verdict(row([1.479, 1.481, 1.483]), base).endswith("noise")  # -0.001
    assert quality.verdict(row([1.490, 1.491, 1.492]), base).endswith("worse")
    assert "cannot tell from noise" in quality.verdict(row([1.47]), row([1.48]))
    assert quality.verdict(base, None) == ""


def test_quality_table_shows_mean_sd_and_the_verdict():
    import quality

    runs = [{"loss": x, "seconds": 661.0, "copied_frac_20": 0.02, "longest_copied": 24, "best_epoch": 12}
            for x in (1.50, 1.52)]
    row = {"label": "plain", "keep": True, "overrides": {"train.epochs": "12"}, **quality.summary(runs),
           "verdict": ""}
    line = quality.table([row]).splitlines()[2]
    assert "`-S train.epochs=12`" in line and "1.5100 ± 0.0141" in line and "11 min 01 s" in line
    assert "12/12" in line and "2.0%" in line


def test_the_ablation_compares_each_row_with_the_carried_row_before_it(tmp_path):
    """Rows come out in the ablation's order, whatever order the runs were kept in; a row whose
    carried predecessor was not run gets no verdict rather than one against an older row."""
    import json

    import quality

    def keep(folder, name, losses):
        folder.mkdir(exist_ok=True)
        for seed, loss in enumerate(losses, 1):
            (folder / f"{name}-seed{seed}.json").write_text(json.dumps(
                {"seed": seed, "seconds": 300.0, "loss": loss, "copied_frac_20": 0.01, "longest_copied": 20,
                 "best_epoch": 12}))

    keep(tmp_path / "b", "offset", [1.470, 1.471, 1.472])
    keep(tmp_path / "a", "plain", [1.490, 1.491, 1.492])
    keep(tmp_path / "a", "clip", [1.460, 1.461, 1.462])  # its predecessor, schedule, was not run
    rows = quality.ablation(quality.kept_runs([tmp_path / "a", tmp_path / "b"]))
    assert [r["name"] for r in rows] == ["plain", "offset", "clip"]
    assert rows[0]["verdict"] == "" and rows[1]["verdict"].endswith("gain") and rows[2]["verdict"] == ""
    assert rows[1]["n"] == 3 and abs(rows[1]["mean"] - 1.471) < 1e-12


def test_kept_runs_refuse_a_folder_without_runs_or_an_unknown_row(tmp_path):
    import pytest
    import quality

    with pytest.raises(SystemExit, match="no kept runs"):
        quality.kept_runs([tmp_path])
    (tmp_path / "dropout-seed1.json").write_text("{}")
    with pytest.raises(SystemExit, match="no ablation row is called 'dropout'"):
        quality.kept_runs([tmp_path])


def test_generation_rows_run_every_side(monkeypatch):
    """bench/run.py's generation rows: the tutorial's OneStep, the Generator and its reloaded
    SavedModel all generate (the SavedModel with every argument its signature asks for)."""
    import run

    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import network
    from charrnn.nn.modeldir import ModelConfig

    monkeypatch.setitem(run.CONFIGS, "small", dict(embedding_dim=8, units=16))
    text = common.generated_text(5_000)
    vocab = Vocabulary.from_counts(count_chars([text]))
    model = network.build(ModelConfig(vocab_size=vocab.size, embedding_dim=8, units=16,
                                        vocab_fingerprint=vocab.fingerprint))
    rows = run.bench_generation("small", text, model, vocab, num_chars=5, rounds=1)
    assert len(rows) == 4 and all(row["ours"] > 0 and row["reference"] > 0 for row in rows)
