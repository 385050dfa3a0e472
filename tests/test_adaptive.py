"""The adaptive softmax (adaptive.py, train.softmax: adaptive): an exact, normalised distribution
over the whole vocabulary; training's loss is its -log p(target); the fused GRU, save/load,
modeldir's checks and resumed training work with it as with the full softmax."""
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn.core.params import TrainParams
from charrnn.data import records
from charrnn.data.vocab import Vocabulary, count_chars
from charrnn.nn import evaluation, modeldir, network, training
from charrnn.nn.clusters import choose_clusters, ranked
from charrnn.nn.modeldir import ModelConfig, ModelError
from tests.kit import CJK_CHARS as CHARS
from tests.kit import CJK_VOCAB as VOCAB
from tests.kit import adaptive_model, kill_at

# CJK_VOCAB: 60 characters with Zipfian counts; with 16 units, a head and three tail clusters


def batch(rows=4, steps=9, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB.size, (rows, steps)).astype(np.int32)
    return x, rng.integers(0, VOCAB.size, (rows, steps)).astype(np.int32)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def reference_log_probs(model, h):
    """Straightforward, in float64 from the weights and the config's clusters: the head's
    log-softmax, and each tail character's cluster entry plus its log-softmax in the cluster."""
    head, clusters = model.head, model.config.clusters
    h = np.asarray(h, np.float64)
    scores = log_softmax(h @ head.head.kernel.numpy() + head.head.bias.numpy())
    out = np.full(h.shape[:-1] + (model.config.vocab_size,), np.nan)
    out[..., list(clusters[0])] = scores[..., :len(clusters[0])]
    for i, (ids, projection, tail) in enumerate(zip(clusters[1:], head.projections, head.tails)):
        logits = h @ projection.kernel.numpy() @ tail.kernel.numpy() + tail.bias.numpy()
        out[..., list(ids)] = scores[..., len(clusters[0]) + i, None] + log_softmax(logits)
    return out


def test_clusters_from_counts():
    clusters, dims = choose_clusters(VOCAB.counts, 16)
    assert len(clusters) == 4 and dims == (4, 1, 1)
    assert sorted(i for c in clusters for i in c) == list(range(VOCAB.size))
    assert clusters[0][0] == 0 and len(clusters[0]) <= 16  # [UNK] in the head; head at most U characters
    counts = np.array([0, *VOCAB.counts])
    by_cluster = [counts[list(c)] for c in clusters]
    assert all(a.min() >= b.max() for a, b in zip(by_cluster[1:], by_cluster[2:]))  # tails by falling count
    assert by_cluster[0][1:].min() >= by_cluster[1].max()
    # each tail cluster holds about 1/4 of what the cluster before it left
    shares = [c.sum() / counts.sum() for c in by_cluster]
    assert shares[0] >= 0.5 and shares[1] > shares[2] > shares[3]
    small, none = choose_clusters(VOCAB.counts, 64)
    assert small == (tuple(ranked(VOCAB.counts).tolist()),) and none == ()  # V <= U: no tail


@pytest.mark.parametrize("rnn_impl,cell", [("keras", "gru"), ("fused", "gru"), ("keras", "lstm")])
def test_log_probs_are_normalised_and_equal_a_reference(rnn_impl, cell):
    model = adaptive_model(rnn_impl, cell=cell)
    x, _ = batch()
    h, _ = model.rnn_outputs(x)
    log_probs = model(x).numpy()
    assert log_probs.shape == (4, 9, VOCAB.size)
    np.testing.assert_allclose(tf.reduce_logsumexp(log_probs, axis=-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(log_probs, reference_log_probs(model, h), atol=1e-5)


@pytest.mark.parametrize("rnn_impl", ["keras", "fused"])
def test_training_loss_is_the_mean_nll_of_the_log_probs(rnn_impl):
    model = adaptive_model(rnn_impl)
    x, y = batch()
    want = -np.take_along_axis(model(x).numpy(), y[..., None], axis=-1).mean()
    assert float(model.mean_nll(x, y)) == pytest.approx(want, rel=1e-6)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert float(model.test_on_batch(x, y)) == pytest.approx(want, rel=1e-6)
    assert float(model.train_on_batch(x, y)) == pytest.approx(want, rel=1e-6)  # the loss before the update


def gradients(model, x, y, loss):
    with tf.GradientTape() as tape:
        value = loss(model, x, y)
    return dict(zip([v.path for v in model.trainable_variables],
                    [tf.convert_to_tensor(g).numpy() for g in tape.gradient(value, model.trainable_variables)]))


def mean_nll(model, x, y):
    return model.mean_nll(x, y, training=True)


def full_nll(model, x, y):  # through the full log-probabilities: the same function, computed the long way
    return -tf.reduce_mean(tf.gather(model(x, training=True), y, batch_dims=2))


def test_gradients_reach_every_head_and_tail_weight_and_equal_the_full_computation():
    model = adaptive_model("fused")
    clusters = model.config.clusters
    x, y = batch(rows=8, steps=12, seed=1)
    y[0, :len(clusters)] = [c[-1] for c in clusters]  # a target in every cluster
    grads = gradients(model, x, y, mean_nll)
    for path, g in grads.items():
        if "logits/" in path:  # the output layer: every entry of every weight
            assert np.all(g != 0), path
    for path, g in gradients(model, x, y, full_nll).items():
        np.testing.assert_allclose(grads[path], g, atol=1e-6, err_msg=path)


def test_targets_in_the_head_only_leave_the_tails_untouched():
    model = adaptive_model()
    head_ids = np.array(model.config.clusters[0])
    x, _ = batch()
    y = head_ids[np.random.default_rng(0).integers(0, len(head_ids), x.shape)].astype(np.int32)
    for path, g in gradients(model, x, y, mean_nll).items():
        if "projection_" in path or "tail_" in path:
            assert np.all(g == 0), path  # -log p(target) does not depend on them
        elif "logits/head" in path:
            assert np.all(g != 0), path  # the clusters' head entries are pushed down too


def test_fused_and_keras_paths_agree():
    slow, fast = adaptive_model("keras"), adaptive_model("fused")
    fast.set_weights(slow.get_weights())
    assert fast.use_fused(training=True) and not slow.use_fused(training=True)
    x, y = batch()
    states = [[tf.random.stateless_normal((4, 16), (1, 0))]]
    (ls, ss), (lf, sf) = slow(x, states, return_state=True), fast(x, states, return_state=True)
    np.testing.assert_allclose(lf, ls, atol=1e-5)
    np.testing.assert_allclose(sf[0][0], ss[0][0], atol=1e-5)
    a, b = gradients(slow, x, y, mean_nll), gradients(fast, x, y, mean_nll)
    for path in a:
        np.testing.assert_allclose(b[path], a[path], atol=1e-6, err_msg=path)
    ids = np.random.default_rng(5).integers(1, VOCAB.size, 1500).astype(np.int32)
    held = [evaluation.held_out_loss(m, ids, batch_size=6, seq_length=20)["loss"] for m in (slow, fast)]
    assert held[1] == pytest.approx(held[0], rel=1e-6)


def test_held_out_loss_equals_the_training_loss_on_one_stream():
    model = adaptive_model()
    ids = np.random.default_rng(2).integers(1, VOCAB.size, 301).astype(np.int32)
    held = evaluation.held_out_loss(model, ids, batch_size=1, seq_length=300)
    assert held["chars"] == 300
    assert held["loss"] == pytest.approx(float(model.mean_nll(ids[None, :-1], ids[None, 1:])), rel=1e-6)


def test_save_load_round_trip(tmp_path):
    model = adaptive_model(layers=2)
    network.save(model, VOCAB, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["softmax"] == "adaptive" and config["tail_dims"] == [4, 1, 1]
    assert [len(c) for c in config["clusters"]] == [len(c) for c in model.config.clusters]
    again, vocab = network.load(tmp_path / "m")
    assert again.config == model.config and vocab == VOCAB
    x, _ = batch()
    assert np.array_equal(again(x).numpy(), model(x).numpy())


def test_a_full_softmax_config_has_no_adaptive_keys(tmp_path):
    config = ModelConfig.from_params(TrainParams(embedding_dim=8, units=16), VOCAB)
    network.save(network.build(config), VOCAB, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert sorted(saved) == ["cell", "dropout", "embedding_dim", "layers", "units", "vocab_fingerprint", "vocab_size"]
    assert modeldir.read(tmp_path / "m").config == config


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("adaptive") / "m"
    network.save(adaptive_model(), VOCAB, path)
    return path


DROP = object()


def edited(saved, tmp_path, changes):
    path = tmp_path / "m"
    shutil.copytree(saved, path)
    config = json.loads((path / "config.json").read_text())
    for key, change in changes.items():
        if change is DROP:
            del config[key]
        else:
            config[key] = change(config[key]) if callable(change) else change
    (path / "config.json").write_text(json.dumps(config))
    return path


def moved(clusters):  # the first id of the last cluster moved into the head: every id still once
    return [clusters[0] + clusters[-1][:1], *clusters[1:-1], clusters[-1][1:]]


@pytest.mark.parametrize("changes,match", [
    ({"clusters": moved}, r"does not match model.weights.h5: the config \(.*clusters=4 of sizes"),
    ({"tail_dims": [4, 2, 1]}, "does not match model.weights.h5"),
    ({"softmax": "full", "clusters": DROP, "tail_dims": DROP}, "does not match model.weights.h5"),
    ({"clusters": lambda c: [c[0][1:], *c[1:]]}, "'clusters' must hold every id from 0 to 60 exactly once"),
    ({"clusters": lambda c: [c[0] + c[1][:1], *c[1:]]}, "'clusters' must hold every id"),
    ({"clusters": lambda c: c[:2]}, r"one non-empty list per entry of 'tail_dims' \(3\), got 2 lists"),
    ({"clusters": "head"}, "'clusters' must be a list of lists of ids"),
    ({"clusters": lambda c: [[str(i) for i in c[0]], *c[1:]]}, "'clusters' must be a list of lists of ids"),
    ({"tail_dims": [4, 0, 1]}, "'tail_dims' must be a list of positive integers"),
    ({"clusters": DROP}, "one non-empty list per entry of 'tail_dims'"),
    ({"softmax": "sampled"}, "'softmax' must be 'full' or 'adaptive'"),
    ({"softmax": "full"}, "'clusters' and 'tail_dims' are for softmax 'adaptive' only"),
    ({"softmax": None}, "'softmax' must be a string"),
])
def test_modeldir_checks_an_adaptive_config_against_its_weights(saved, tmp_path, changes, match):
    path = edited(saved, tmp_path, changes)
    with pytest.raises(ModelError, match=match):
        modeldir.read(path)
    with pytest.raises(ModelError, match=match):
        network.load(path)


TEXT = "".join(np.random.default_rng(0).choice(list(CHARS), 3000, p=np.array(VOCAB.counts) / sum(VOCAB.counts)))
PARAMS = TrainParams(embedding_dim=8, units=16, epochs=3, batch_size=16, learning_rate=0.01, schedule="cosine",
                     warmup_steps=5, random_offset=True, softmax="adaptive")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    (path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    vocab = Vocabulary.from_counts(count_chars([TEXT]))
    records.write_records(path / "corpus.txt", vocab, path / "rec", seq_length=20, val_fraction=0.1)
    return path / "rec", vocab


def run(data, backup_dir=None):
    training.configure(PARAMS.seed)
    return training.train(PARAMS, str(data[0]), data[1], backup_dir=backup_dir)


@pytest.fixture(scope="module")
def whole(data):
    return run(data)


def test_training_learns_and_is_reproducible(data, whole):
    assert len(whole.model.config.clusters) > 1 and whole.model.use_fused(training=True)
    assert whole.history["loss"].iloc[-1] < whole.history["loss"].iloc[0]
    again = run(data)
    assert again.history.equals(whole.history)
    for a, b in zip(whole.model.get_weights(), again.model.get_weights()):
        assert np.array_equal(a, b)


def test_resumed_training_equals_the_uninterrupted_one(data, whole, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        kill_at(m, epoch=2, batch=3)
        with pytest.raises(KeyboardInterrupt):
            run(data, tmp_path / "backup")
    resumed = run(data, tmp_path / "backup")
    assert list(resumed.throughput["epoch"]) == [2, 3] and resumed.history.equals(whole.history)
    for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()):
        assert np.array_equal(a, b)
