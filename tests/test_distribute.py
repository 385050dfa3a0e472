"""train.distribute: MirroredStrategy over two logical CPU devices matches one-device training."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from charrnn.core.params import Params, ParamsError
from charrnn.nn import distribute, workers

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from charrnn.data import reader, records
    from charrnn.nn import training
    from charrnn.core.params import TrainParams
    from charrnn.data.vocab import Vocabulary, count_chars

    # The arithmetic under a fixed data order; with random offsets the data is the same too
    # (test_distributed_batches_are_the_one_device_batches), the float sums merely take another order.
    FIXED_WINDOWS = {"random_offset": False}

    text = "to be or not to be, that is the question.\\n" * 119
    open("corpus.txt", "w").write(text)
    vocab = Vocabulary.from_counts(count_chars([text]))
    records.write_records("corpus.txt", vocab, "rec", seq_length=20, val_fraction=0.1)
    out = {}
    for kind in ("auto", "mirrored"):
        params = TrainParams(embedding_dim=8, units=32, epochs=2, batch_size=16, learning_rate=0.01,
                             distribute=kind, **FIXED_WINDOWS)
        training.configure(params.seed)
        result = training.train(params, "rec", vocab)
        out[kind] = {"replicas": result.model.distribute_strategy.num_replicas_in_sync,
                     "loss": result.history["loss"].tolist(),
                     "weights": [w.tolist() for w in result.model.get_weights()]}
    json.dump(out, sys.stdout)
''')


def test_mirrored_over_two_cpus_matches_one_device(tmp_path):
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


WORKER = textwrap.dedent('''
    import sys
    import numpy as np
    from charrnn.data import records
    from charrnn.nn import training
    from charrnn.core.params import TrainParams
    from charrnn.data.vocab import Vocabulary

    FIXED_WINDOWS = {"random_offset": False}  # as in SCRIPT
    kind, out = sys.argv[1], sys.argv[2]
    training.configure(42, threads=1)
    vocab = Vocabulary.load("vocab.json")
    params = TrainParams(embedding_dim=8, units=32, epochs=2, batch_size=16, learning_rate=0.01, distribute=kind,
                         **FIXED_WINDOWS)
    result = training.train(params, "rec", vocab)
    np.savez(out, loss=np.array(result.history["loss"]), *result.model.get_weights())
''')


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_match_one_process(tmp_path):
    import numpy as np

    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars

    text = "to be or not to be, that is the question.\n" * 119
    (tmp_path / "corpus.txt").write_text(text)
    vocab = Vocabulary.from_counts(count_chars([text]))
    vocab.save(tmp_path / "vocab.json")
    records.write_records(tmp_path / "corpus.txt", vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1)
    (tmp_path / "worker.py").write_text(WORKER)

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "worker.py", "multi_worker", f"worker{i}.npz"], cwd=tmp_path,
                         env={**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for i in range(2)
    ]
    try:
        single = subprocess.run([sys.executable, "worker.py", "auto", "single.npz"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert single.returncode == 0, single.stderr[-3000:]
        for w in workers:
            log, _ = w.communicate(timeout=300)
            assert w.returncode == 0, log[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()

    one = np.load(tmp_path / "single.npz")
    for i in range(2):
        worker = np.load(tmp_path / f"worker{i}.npz")
        assert set(worker.files) == set(one.files)
        np.testing.assert_allclose(worker["loss"], one["loss"], rtol=1e-5)
        for key in one.files:
            np.testing.assert_allclose(worker[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.DistributeError, match="needs TF_CONFIG"):
        distribute.strategy("multi_worker")


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {}, "task": {"type": "chief", "index": 0}}, True),
])
def test_is_chief(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert workers.is_chief() is chief


def test_auto_on_one_device_is_the_default_strategy():
    import tensorflow as tf

    assert distribute.strategy("auto") is tf.distribute.get_strategy()


def test_unknown_strategy_is_a_params_error():
    with pytest.raises(ParamsError, match="train.distribute.*'auto' or 'mirrored' or 'multi_worker'"):
        Params.from_dict({"train": {"distribute": "tpu"}})


BATCHES = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from charrnn.data import reader, records
    from charrnn.data.vocab import Vocabulary, count_chars

    text = "to be or not to be, that is the question.\\n" * 119
    open("corpus.txt", "w").write(text)
    vocab = Vocabulary.from_counts(count_chars([text]))
    records.write_records("corpus.txt", vocab, "rec", seq_length=20, val_fraction=0.1)
    ds = reader.dataset("rec", "train", 16, shuffle_seed=42, epochs=2, random_offset=True)
    one = [x.numpy() for x, _ in ds]
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    mirrored = [np.concatenate([p.numpy() for p in strategy.experimental_local_results(x)])
                for x, _ in strategy.experimental_distribute_dataset(ds)]
    assert len(one) == len(mirrored) > 2
    assert all(np.array_equal(a, b) for a, b in zip(one, mirrored))
    print("same batches")
''')


def test_distributed_batches_are_the_one_device_batches(tmp_path):
    """The default recipe's random window offsets reach every replica exactly as one device sees them."""
    proc = subprocess.run([sys.executable, "-c", BATCHES], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "same batches" in proc.stdout, proc.stderr[-3000:]
