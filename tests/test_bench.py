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
