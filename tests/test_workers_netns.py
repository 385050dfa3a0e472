"""train.distribute=multi_worker across two networks: one worker in each of two network namespaces
joined by a veth pair (tests/netns.py), talking over it as two machines would.

Three clusters run side by side, each on its own port (a second cluster in the same processes is
not reliable): "same", the README's command (stages/train.py) on two checkouts of the same data;
"different" and "uneven", a script giving each worker its own corpus. Meanwhile processes
without a network train the one-process references."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from charrnn.nn.modeldir import WEIGHTS
from tests import netns
from tests.conftest import unavailable
from tests.project import REPO, write_params

pytestmark = pytest.mark.slow

PORT = 12345  # and the next ones: free, as each namespace is new
STAGE = [sys.executable, str(REPO / "stages" / "train.py")]
# The project's recipe (Adam, clipping, warm-up, cosine schedule, random offsets), on a tiny model
SAME = {"embedding_dim": 8, "units": 32, "epochs": 2, "batch_size": 16, "learning_rate": 0.01}

WORKER = textwrap.dedent('''
    import json, sys
    import keras
    import numpy as np
    from charrnn.core.params import TrainParams
    from charrnn.data import reader
    from charrnn.data.vocab import Vocabulary
    from charrnn.nn import recipe, training

    # SGD steps in proportion to the gradient: Adam's steps would hide a sum taken for a mean
    recipe.optimizer = lambda params, total_steps: keras.optimizers.SGD(params.learning_rate)
    params, name, vocab = json.loads(sys.argv[1]), sys.argv[2], Vocabulary.load("vocab.json")
    for records in sys.argv[3:]:  # each from the same initial weights
        batch = reader.load_meta(records).train_windows  # every window in one batch: one step an epoch
        training.configure(42, threads=1)
        result = training.train(TrainParams(**params, batch_size=batch), records, vocab)
        np.savez(f"{name}-{records}.npz", loss=np.array(result.history["loss"]), *result.model.get_weights())
''')
DIFFERENT = {"embedding_dim": 8, "units": 32, "epochs": 3, "learning_rate": 0.5, "random_offset": False}
WINDOWS = {"": 16, "15": 15}  # the "different" and "uneven" cases' corpora (a, b, union; a15, b15, union15)


@pytest.fixture(scope="module")
def network():
    reason = netns.unavailable_reason()
    if reason:
        unavailable(reason)
    with contextlib.ExitStack() as stack:
        try:
            pair = stack.enter_context(netns.veth_pair())
        except subprocess.CalledProcessError as e:
            unavailable(f"cannot make network namespaces here: {' '.join(e.cmd)}: {e.stderr.strip()}")
        yield pair


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The corpora's records in one vocabulary, three checkouts for the train stage (two machines
    and one process) and the script of the "different" and "uneven" cases."""
    directory = tmp_path_factory.mktemp("workers")
    write_corpora(directory)
    for name, distribute in (("machine0", "multi_worker"), ("machine1", "multi_worker"), ("one", "auto")):
        checkout(directory, name, distribute)
    (directory / "worker.py").write_text(WORKER)
    return directory


@pytest.fixture(scope="module")
def trained(network, workdir):
    """workdir, once every process has run to its end."""
    commands = processes(network, workdir)
    logs = {name: workdir / f"{name}.log" for name in commands}
    with contextlib.ExitStack() as stack:
        procs = {}
        for name, (side, cwd, argv, config) in commands.items():
            log = stack.enter_context(open(logs[name], "w"))
            procs[name] = launch(network, side, argv, cwd=cwd, env=environment(config), stdout=log,
                                 stderr=subprocess.STDOUT)
            stack.callback(stop, procs[name])
        wait_all(procs, logs, timeout=300)
    for name in commands:
        if "worker" in name:
            assert "Strategy with 2 replica(s)" in logs[name].read_text(), name
    return workdir


def processes(network, workdir) -> dict:
    """{name: (namespace or None, cwd, argv, TF_CONFIG or None)} of every process of the test."""
    script = [sys.executable, "worker.py"]
    ports = {"same": PORT, "different": PORT + 1, "uneven": PORT + 2}
    one = script + [script_params("auto"), "one", "a", "b", "union", "union15"]
    commands = {"same-one": (None, workdir / "one", STAGE, None), "different-one": (None, workdir, one, None)}
    for i in range(2):
        commands[f"same-worker{i}"] = (i, workdir / f"machine{i}", STAGE, tf_config(network, ports["same"], i))
        for case, suffix in (("different", ""), ("uneven", "15")):
            argv = script + [script_params("multi_worker"), f"worker{i}", "ab"[i] + suffix]
            commands[f"{case}-worker{i}"] = (i, workdir, argv, tf_config(network, ports[case], i))
    return commands


def launch(network, side: int | None, argv: list[str], **popen) -> subprocess.Popen:
    """In namespace `side`; or, for None, outside them all (a process that sends nothing)."""
    return subprocess.Popen(argv, **popen) if side is None else network.spawn(side, argv, **popen)


def tf_config(network, port: int, index: int) -> str:
    cluster = {"worker": [f"{address}:{port}" for address in network.addresses]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def script_params(distribute: str) -> str:
    return json.dumps({**DIFFERENT, "distribute": distribute})


def environment(config: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if config is not None:
        env["TF_CONFIG"] = config
    return {k: v for k, v in env.items() if "proxy" not in k.lower()}  # the workers talk to each other directly


def wait_all(procs: dict, logs: dict, timeout: float) -> None:
    """Until every process has ended well; the first to fail fails the test at once (its partner
    would wait for it until TensorFlow's heartbeat timeout)."""
    deadline = time.monotonic() + timeout
    while any(proc.poll() is None for proc in procs.values()):
        assert time.monotonic() < deadline, f"still running after {timeout} s"
        time.sleep(0.2)
        for name, proc in procs.items():
            assert proc.poll() in (None, 0), f"{name} exited with {proc.returncode}:\n{logs[name].read_text()[-3000:]}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def write_corpora(directory) -> None:
    """rec: a line of Hamlet, 5001 characters: 4501 train, 225 windows, 224 with random offsets,
    14 batches of 16 (see test_two_machines_...). For each of WINDOWS, a and b: that many training
    windows all alike ("abcd..." and "acbd..."), and union: the first half (rounded up) of a's,
    then b's. All in one vocabulary."""
    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars

    corpora = {"rec": ("to be or not to be, that is the question.\n" * 120)[:5001]}
    for suffix, n in WINDOWS.items():
        length = 20 * n + 40  # 0.9 of it trains: n windows of 21 characters stepping by 20
        a, b = ("abcd" * n * 6)[:length], ("acbd" * n * 6)[:length]
        cut = 20 * -(-n // 2)  # a's last window there ends on b's first "a"
        corpora |= {f"a{suffix}": a, f"b{suffix}": b, f"union{suffix}": a[:cut] + b[:length - cut]}
    vocab = Vocabulary.from_counts(count_chars(corpora.values()))
    vocab.save(directory / "vocab.json")
    for name, text in corpora.items():
        (directory / f"{name}.txt").write_text(text)
        records.write_records(directory / f"{name}.txt", vocab, directory / name, seq_length=20, val_fraction=0.1)


def checkout(directory, name: str, distribute: str) -> None:
    """What the train stage of a machine reads: dvc.yaml, params.yaml, the vocabulary, the parent
    record (from scratch) and the records (`dvc pull` on a real one)."""
    from charrnn.core import files, paths
    from charrnn.nn import lineage

    root = directory / name
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", root)
    write_params(root, {"seq_length": 20, "train": {**SAME, "distribute": distribute}})
    shutil.copy(directory / "vocab.json", root / paths.VOCAB)
    files.write_json(root / paths.PARENT, lineage.record(None))  # what build_vocab writes for no init_from
    shutil.copytree(directory / "rec", root / "data" / "records")


def saved_weights(root) -> dict:
    """{dataset path: array} of the model the train stage saved in checkout `root`."""
    import h5py

    arrays = {}

    def keep(path, item):
        if isinstance(item, h5py.Dataset):
            arrays[path] = item[()]

    with h5py.File(root / "data" / "model" / WEIGHTS, "r") as f:
        f.visititems(keep)
    assert arrays
    return arrays


def assert_close(a, b) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)


def assert_bitwise_equal(a, b) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a if k != "loss")


def trained_on(directory, name: str) -> dict:
    """The "different" case's weights and losses of one-RECORDS (one process on a, b or union)
    or workerI-RECORDS (worker I of the cluster)."""
    return dict(np.load(directory / f"{name}.npz"))


def history(root) -> np.ndarray:
    """epoch, loss, val_loss of each epoch of the train stage in checkout `root`."""
    return np.loadtxt(root / "metrics" / "history.csv", delimiter=",", skiprows=1)


def test_the_namespaces_are_joined_and_lead_nowhere_else(network):
    for side in range(2):
        assert "UP" in network.link(side, "lo")["flags"]
        assert "default" not in network.routes(side), network.routes(side)
        peer = network.addresses[1 - side]
        assert f"{peer} dev {network.ends[side]}" in netns.ip("-n", network.names[side], "route", "get", peer)
        probe = subprocess.run(network.command(side, [sys.executable, "-c",
                               "import socket; socket.create_connection(('192.0.2.1', 9), timeout=5)"]),
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "Network is unreachable" in probe.stderr, probe.stderr


def test_two_machines_running_the_train_stage_end_identical_and_match_one_process(trained):
    """The README's worker command on each machine, the same records, the project's recipe. Every
    batch splits evenly between the workers: a batch that does not (a last one of 15) is weighed
    half and half by the workers rather than window by window (weights 4e-4 off after 2 epochs)."""
    from charrnn.data import reader

    assert reader.window_count(reader.load_meta(trained / "rec"), "train", shifted=True) % SAME["batch_size"] == 0
    machines = [trained / f"machine{i}" for i in range(2)]
    weights = [(m / "data" / "model" / WEIGHTS).read_bytes() for m in machines]
    assert weights[0] == weights[1]  # the saved file's bytes are reproducible (charrnn.nn.network.save)
    assert_bitwise_equal(*map(saved_weights, machines))
    assert_close(saved_weights(machines[0]), saved_weights(trained / "one"))
    assert np.array_equal(history(machines[0]), history(machines[1]))
    np.testing.assert_allclose(history(machines[0]), history(trained / "one"), rtol=1e-5)


def test_the_workers_talked_over_the_veth_pair(trained, network):
    """Their only way to each other. Each needs the other's whole gradient every step, so it
    receives at least the weights' size a step (the "same" case's steps alone)."""
    from charrnn.data import reader

    steps = SAME["epochs"] * reader.batches_per_epoch(trained / "rec", "train", SAME["batch_size"], random_offset=True)
    weights = sum(array.nbytes for array in saved_weights(trained / "machine0").values())
    for side in range(2):
        assert network.received_bytes(side) > steps * weights


def test_with_different_data_per_worker_the_gradients_are_averaged(trained):
    """Worker 0 trains on a, worker 1 on b: every window of each is the same one, so whatever part
    of a batch a worker takes, it is copies of its window, and each step of the cluster is one of
    the mean gradient of both. One process training on the union (half of each in its batch)
    takes the same steps, and one on either corpus alone does not."""
    assert_windows(trained, "")
    worker0, worker1 = trained_on(trained, "worker0-a"), trained_on(trained, "worker1-b")
    assert_bitwise_equal(worker0, worker1)
    union = trained_on(trained, "one-union")
    np.testing.assert_allclose(worker0.pop("loss"), union.pop("loss"), rtol=1e-5)
    assert_close(worker0, union)
    for alone in ("a", "b"):
        assert largest_difference(worker0, trained_on(trained, f"one-{alone}")) > 1e-2, alone


def assert_windows(directory, suffix: str) -> None:
    """The corpora are what the test says: n training windows each, all alike in a and in b, the
    first half (rounded up) of a's then b's in the union."""
    from charrnn.data import reader

    def windows(name):
        return [w.numpy().tobytes() for w in reader.read_windows(directory / f"{name}{suffix}", "train")]

    n, (a, b, union) = WINDOWS[suffix], map(windows, ("a", "b", "union"))
    assert len(set(a)) == len(set(b)) == 1 and a[0] != b[0]
    assert len(a) == len(b) == len(union) == n
    assert union == a[: -(-n // 2)] + b[: n // 2]


def test_a_batch_split_unevenly_is_weighed_per_worker_not_per_window(trained):
    """Batches of 15 windows, 8 for one worker and 7 for the other: the cluster steps on the mean
    of the two workers' gradients, as with 8 and 8, not on that of the 15 windows (README)."""
    assert_windows(trained, "15")
    worker0, worker1 = trained_on(trained, "worker0-a15"), trained_on(trained, "worker1-b15")
    assert_bitwise_equal(worker0, worker1)
    even = trained_on(trained, "worker0-a")
    assert_close({k: v for k, v in worker0.items() if k != "loss"}, {k: v for k, v in even.items() if k != "loss"})
    assert largest_difference(worker0, trained_on(trained, "one-union15")) > 5e-4
