"""train.distribute=multi_worker across two networks: one worker in each of two network namespaces
joined by a veth pair (tests/netns.py), talking over it as two machines would."""
import contextlib
import functools
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests import netns
from tests.conftest import unavailable

pytestmark = pytest.mark.slow

PORT = 12345  # and the ports after it: free, as each namespace is new

WORKER = textwrap.dedent('''
    import json, sys
    import keras
    import numpy as np
    from charrnn.core.params import TrainParams
    from charrnn.data.vocab import Vocabulary
    from charrnn.nn import recipe, training

    def sgd(params, total_steps):  # steps in proportion to the gradient (Adam's would hide a sum taken for a mean)
        return keras.optimizers.SGD(params.learning_rate)

    optimizers = {"project": recipe.optimizer, "sgd": sgd}
    vocab = Vocabulary.load("vocab.json")
    for run in json.loads(sys.argv[1]):  # each from the same initial weights
        recipe.optimizer = optimizers[run["optimizer"]]
        training.configure(42, threads=1)
        result = training.train(TrainParams(**run["params"]), run["records"], vocab)
        np.savez(run["out"], loss=np.array(result.history["loss"]), *result.model.get_weights())
''')

TINY = {"embedding_dim": 8, "units": 32, "random_offset": False}
WINDOWS = 16  # of each corpus of the "different" case, all in one batch: one step an epoch
CASES = {  # optimizer, params, each worker's records, one process's records
    "same": ("project", {"epochs": 2, "batch_size": 16, "learning_rate": 0.01}, ("rec", "rec"), ("rec",)),
    "different": ("sgd", {"epochs": 3, "batch_size": WINDOWS, "learning_rate": 0.5}, ("a", "b"), ("a", "b", "union")),
}


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
    """The corpora's records in one vocabulary, and the training script."""
    directory = tmp_path_factory.mktemp("workers")
    write_corpora(directory)
    (directory / "worker.py").write_text(WORKER)
    return directory


@pytest.fixture(scope="module")
def trained(network, workdir) -> dict:
    """Each case's two workers (a cluster of its own, on its own port; a second cluster in the same
    processes is not reliable) and, meanwhile, one process without a network training on each
    case's one-process records: {"CASE/workerI" or "CASE/RECORDS": the weights and losses}."""
    runs = {f"{case}-worker{i}": [run(case, "multi_worker", records[i], f"worker{i}")]
            for case, (_, _, records, _) in CASES.items() for i in range(2)}
    runs["one"] = [run(case, "auto", r, r) for case, (*_, one) in CASES.items() for r in one]
    logs = {name: workdir / f"{name}.log" for name in runs}
    with contextlib.ExitStack() as stack:
        out = {name: stack.enter_context(open(path, "w")) for name, path in logs.items()}
        procs = {"one": start(subprocess.Popen, out["one"], workdir, runs["one"])}
        stack.callback(stop, procs["one"])
        for port, case in enumerate(CASES, PORT):
            cluster = {"worker": [f"{address}:{port}" for address in network.addresses]}
            for i in range(2):
                name = f"{case}-worker{i}"
                tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
                procs[name] = start(functools.partial(network.spawn, i), out[name], workdir, runs[name],
                                    TF_CONFIG=json.dumps(tf_config))
        wait_all(procs, logs, timeout=300)
    for name in runs.keys() - {"one"}:
        assert "Strategy with 2 replica(s)" in logs[name].read_text(), name
    return {path.stem.replace("+", "/"): np.load(path) for path in workdir.glob("*.npz")}


def run(case: str, kind: str, records: str, name: str) -> dict:
    optimizer, params, _, _ = CASES[case]
    return {"optimizer": optimizer, "params": {**TINY, **params, "distribute": kind}, "records": records,
            "out": f"{case}+{name}.npz"}


def start(spawn, log, cwd, runs: list[dict], **env) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}  # the workers talk to each other directly
    return spawn([sys.executable, "worker.py", json.dumps(runs)], cwd=cwd, env=env, stdout=log,
                 stderr=subprocess.STDOUT)


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


def write_corpora(tmp_path) -> None:
    """rec: a line of Hamlet; a and b: WINDOWS training windows all alike ("abcd..." and "acbd..."),
    and union: half of each, in one vocabulary."""
    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars

    a, b = "abcd" * 90, "acbd" * 90  # 360 characters: 324 train, 16 windows of 21 stepping by 20
    corpora = {"rec": "to be or not to be, that is the question.\n" * 119, "a": a, "b": b,
               "union": a[:20 * WINDOWS // 2] + b[:-20 * WINDOWS // 2]}  # a's last window ends on b's first "a"
    vocab = Vocabulary.from_counts(count_chars(corpora.values()))
    vocab.save(tmp_path / "vocab.json")
    for name, text in corpora.items():
        (tmp_path / f"{name}.txt").write_text(text)
        records.write_records(tmp_path / f"{name}.txt", vocab, tmp_path / name, seq_length=20, val_fraction=0.1)


def assert_bitwise_equal(a, b) -> None:
    assert a.files == b.files
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key


def assert_close(a, b) -> None:
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)


def largest_difference(a, b) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files if k != "loss")


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


def test_two_workers_on_two_networks_end_identical_and_match_one_process(trained):
    """The same records for both, the project's recipe (Adam, clipping, cosine schedule)."""
    assert_bitwise_equal(trained["same/worker0"], trained["same/worker1"])
    assert_close(trained["same/worker0"], trained["same/rec"])


def test_the_workers_talked_over_the_veth_pair(trained, network, workdir):
    """Their only way to each other. Each needs the other's whole gradient every step, so it
    receives at least the weights' size a step."""
    from charrnn.data import reader

    _, params, _, _ = CASES["same"]
    steps = params["epochs"] * reader.batches_per_epoch(workdir / "rec", "train", params["batch_size"])
    weights = sum(array.nbytes for key, array in trained["same/worker0"].items() if key != "loss")
    for side in range(2):
        assert network.received_bytes(side) > steps * weights


def test_with_different_data_per_worker_the_gradients_are_averaged(trained, workdir):
    """Worker 0 trains on a, worker 1 on b: every window of each is the same one, so whatever part
    of a batch a worker takes, it is copies of its window, and each step of the cluster is one of
    the mean gradient of both. One process training on the union (half of each in every batch)
    takes the same steps, and one on either corpus alone does not."""
    assert_windows(workdir)
    worker = trained["different/worker0"]
    assert_bitwise_equal(worker, trained["different/worker1"])
    assert_close(worker, trained["different/union"])
    for alone in ("a", "b"):
        assert largest_difference(worker, trained[f"different/{alone}"]) > 1e-2, alone


def assert_windows(directory) -> None:
    """The corpora are what the test says: WINDOWS training windows each, all alike in a and in
    b, half of each in the union."""
    from charrnn.data import reader

    def windows(name):
        return [w.numpy().tobytes() for w in reader.read_windows(directory / name, "train")]

    a, b, union = windows("a"), windows("b"), windows("union")
    assert len(set(a)) == len(set(b)) == 1 and a[0] != b[0]
    assert len(a) == len(b) == len(union) == WINDOWS
    assert sorted(union) == sorted(a[: WINDOWS // 2] + b[: WINDOWS // 2])
