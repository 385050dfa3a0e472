"""train.distribute: MirroredStrategy over two logical CPU devices matches one-device training."""
import subprocess
import sys
import textwrap

import pytest

from charrnn import distribute
from charrnn.params import Params, ParamsError

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from charrnn import records, training
    from charrnn.params import TrainParams
    from charrnn.vocab import Vocabulary, count_chars

    text = "to be or not to be, that is the question.\\n" * 119
    open("corpus.txt", "w").write(text)
    vocab = Vocabulary.from_counts(count_chars([text]))
    records.write_records("corpus.txt", vocab, "rec", seq_length=20, val_fraction=0.1)
    out = {}
    for kind in ("auto", "mirrored"):
        params = TrainParams(embedding_dim=8, units=32, epochs=2, batch_size=16, learning_rate=0.01,
                             distribute=kind)
        training.configure(params.seed)
        result = training.train(params, "rec", vocab)
        out[kind] = {"replicas": result.model.distribute_strategy.num_replicas_in_sync,
                     "loss": result.history["loss"].tolist(),
                     "weights": [w.tolist() for w in result.model.get_weights()]}
    json.dump(out, sys.stdout)
''')


@pytest.mark.xfail(strict=True, reason="a reshuffle_each_iteration shuffle is re-seeded by MirroredStrategy's "
                   "dataset rewrite; needs the per-epoch order to be a pure function of (seed, epoch)")
def test_mirrored_over_two_cpus_matches_one_device(tmp_path):
    import json

    import numpy as np

    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, mirrored = out["auto"], out["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    assert mirrored["loss"] == pytest.approx(one["loss"], rel=1e-5)
    for a, b in zip(one["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_auto_on_one_device_is_the_default_strategy():
    import tensorflow as tf

    assert distribute.strategy("auto") is tf.distribute.get_strategy()


def test_unknown_strategy_is_a_params_error():
    with pytest.raises(ParamsError, match="train.distribute.*'auto' or 'mirrored'"):
        Params.from_dict({"train": {"distribute": "tpu"}})
