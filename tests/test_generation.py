import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from charrnn.core import files
from charrnn.data.vocab import UNK, UNK_ID, Vocabulary
from charrnn.nn import stepping
from charrnn.nn.network import save
from charrnn.sampling.generation import (
    KNOWN_VERSIONS,
    SIGNATURE_VERSION,
    Engine,
    ExportError,
    Generator,
    draw,
    export,
    generate,
    probabilities,
    sample,
    truncate,
    uniforms,
    unk_mask,
)
from charrnn.sampling.settings import SamplingSettings, SettingsError, check_prompts
from tests.kit import CJK_CHARS, CJK_VOCAB, PROMPTS, VOCAB, adaptive_model, settings, tiny_model

V1 = Path(__file__).parent / "data"  # a model and its generator exported by signature version 1 (charrnn 9419bc7)


def reference(model, vocab, prompts, num_chars, temperature, seed):
    """The straightforward way: the full Keras model on each prompt alone, one character per
    Python step, drawing each character with the library's sampler at (seed, row, position)."""
    texts = []
    for row, prompt in enumerate(prompts):
        ids = list(vocab.encode(prompt))
        states = model.initial_states(1)
        for i in ids[:-1]:
            _, states = model(np.array([[i]], np.int32), states, return_state=True)
        x, out = ids[-1], []
        for position in range(num_chars):
            logits, states = model(np.array([[x]], np.int32), states, return_state=True)
            u = uniforms(tf.constant([seed], tf.int64), tf.constant([row], tf.int64), tf.constant([position], tf.int64))
            x = int(sample(logits[:, 0], tf.constant([temperature]), tf.constant([0]), tf.constant([1.0]), u)[0])
            out.append(x)
        texts.append(prompt + vocab.decode(out))
    return texts


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)])
def test_compiled_generation_matches_a_step_by_step_reference(cell, layers):
    model = tiny_model(cell=cell, layers=layers)
    assert generate(model, VOCAB, PROMPTS, settings(12, 0.9, seed=42)) == reference(model, VOCAB, PROMPTS, 12, 0.9, 42)


def test_chunks_and_the_one_call_graph_give_the_same_text():
    generator = Generator(tiny_model(layers=2), VOCAB)
    whole = generator.generate(tf.constant(PROMPTS), 50, 0.8, 0, 1.0, tf.constant(5, tf.int64))
    texts = list(PROMPTS)
    for pieces in generator.stream(PROMPTS, settings(50, 0.8, seed=5), chunk=7):
        assert all(len(p) <= 7 for p in pieces)
        texts = [t + p for t, p in zip(texts, pieces)]
    assert texts == [s.decode() for s in whole.numpy()]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_request_gets_the_same_text_alone_or_in_any_batch(cell):
    """What dynamic batching relies on: a row's text depends on its own prompt, seed and row index
    only, never on the other rows of the batch or the batch's size (up to 64 rows)."""
    model = tiny_model(cell=cell, units=64, layers=2)
    generator = Generator(model, VOCAB)
    alone = generator.generate_text(["ROMEO:"], settings(40, 1.0, seed=9))[0]
    rng = np.random.default_rng(0)
    for size in (2, 3, 17, 64):
        others = ["".join(rng.choice(list("ABabcde :"), rng.integers(1, 12))) for _ in range(size - 1)]
        prompts = ["ROMEO:", *others]
        x, state = generator.start(tf.constant(prompts))
        text, _, _ = generator.extend(x, state, tf.constant(40), tf.fill([size], 1.0), tf.zeros([size], tf.int32),
                                      tf.ones([size]), tf.fill([size], tf.constant(9, tf.int64)),
                                      tf.zeros([size], tf.int64), tf.zeros([size], tf.int64))
        assert "ROMEO:" + text[0].numpy().decode() == alone, size


@pytest.mark.parametrize("cell,softmax,units", [("gru", "dense", 256), ("lstm", "dense", 256), ("gru", "adaptive", 256),
                                                ("gru", "dense", 300), ("lstm", "dense", 100), ("gru", "adaptive", 60)])
def test_a_rows_state_has_the_same_bits_alone_or_in_any_batch(cell, softmax, units):
    """Stricter than the texts above: the state after a row's characters, bit for bit, at the batch
    sizes where a matrix product's sums would differ under the CPU pin (below 8 rows; 25, 49), and
    with widths that are no multiple of a vector (300, 100, 60 units; 15 characters), where a
    sigmoid's last elements would go through Eigen's scalar code at some batch sizes only."""
    if softmax == "adaptive":
        model = adaptive_model(units=units, layers=2)
        vocab = CJK_VOCAB
    else:
        model, vocab = tiny_model(cell=cell, units=units, layers=2, embedding_dim=32), VOCAB
    generator = Generator(model, vocab)
    rng = np.random.default_rng(1)
    prompts = ["".join(rng.choice(list(vocab.chars[:20]), rng.integers(1, 12))) for _ in range(64)]
    x, state = generator.start(tf.constant(prompts))
    x, state = x.numpy(), state.numpy()

    def extended(rows: int):
        n = tf.fill([rows], 1)
        text, _, out = generator.extend(x[:rows], state[:rows], tf.constant(30), tf.fill([rows], 1.0), 0 * n,
                                        tf.ones([rows]), tf.fill([rows], tf.constant(3, tf.int64)),
                                        tf.range(rows, dtype=tf.int64), tf.zeros([rows], tf.int64))
        return text.numpy(), out.numpy()

    text_all, state_all = extended(64)
    for rows in (1, 2, 3, 7, 8, 25, 49):
        alone_x, alone_state = generator.start(tf.constant(prompts[:rows]))
        assert np.array_equal(alone_state.numpy(), state[:rows]), rows  # the prompts' states too
        text, out = extended(rows)
        assert np.array_equal(out, state_all[:rows]) and list(text) == list(text_all[:rows]), rows


@pytest.mark.parametrize("width", [15, 65, 300, 5000])
def test_a_rows_probabilities_have_the_same_bits_in_any_batch(width):
    """The sampler row by row: its softmax (and the adaptive head's log-softmax; TensorFlow's own
    differ in the last bits for some rows at some batch sizes under the CPU pin), the top-k and
    nucleus cut and the draw."""
    logits = tf.constant(np.random.default_rng(width).normal(size=(64, width)).astype(np.float32) * 3)
    temperature = tf.fill([64], 0.7)
    top_k, top_p = tf.fill([64], 10), tf.fill([64], 0.9)
    u = uniforms(tf.fill([64], tf.constant(5, tf.int64)), tf.range(64, dtype=tf.int64), tf.zeros([64], tf.int64))
    full, full_log = probabilities(logits, temperature).numpy(), stepping.log_softmax(logits).numpy()
    full_cut = truncate(full, top_k, top_p).numpy()
    full_ids = draw(full_cut, u).numpy()
    for rows in range(1, 64):
        probs = probabilities(logits[:rows], temperature[:rows])
        assert np.array_equal(probs.numpy(), full[:rows]), rows
        assert np.array_equal(stepping.log_softmax(logits[:rows]).numpy(), full_log[:rows]), rows
        cut = truncate(probs, top_k[:rows], top_p[:rows])
        assert np.array_equal(cut.numpy(), full_cut[:rows]), rows
        assert np.array_equal(draw(cut, u[:rows]).numpy(), full_ids[:rows]), rows
    assert np.allclose(full, tf.nn.softmax(logits / 0.7 + unk_mask(width)), atol=1e-6)
    assert np.allclose(full_log, tf.nn.log_softmax(logits), atol=1e-5)


def test_unk_is_never_generated_even_when_the_model_prefers_it():
    model = tiny_model()
    bias = model.dense.bias.numpy()
    bias[UNK_ID] = 1e4
    model.dense.bias.assign(bias)
    outputs = generate(model, VOCAB, PROMPTS, settings(200, 1.0, seed=3))
    for prompt, out in zip(PROMPTS, outputs):
        assert len(out) == len(prompt) + 200 and UNK not in out[len(prompt):]


def test_same_seed_same_text_different_seed_different_text():
    generator = Generator(tiny_model(), VOCAB)
    first = generator.generate_text(PROMPTS, settings(40, 1.0, seed=7))
    assert generator.generate_text(PROMPTS, settings(40, 1.0, seed=7)) == first
    assert generator.generate_text(PROMPTS, settings(40, 1.0, seed=8)) != first


def greedy(model, prompt, num_chars):
    ids = list(VOCAB.encode(prompt))
    logits, states = model(np.array([ids], np.int32), return_state=True)
    out = []
    for _ in range(num_chars):
        row = logits[0, -1].numpy().copy()
        row[UNK_ID] = -np.inf
        out.append(int(row.argmax()))
        logits, states = model(np.array([[out[-1]]], np.int32), states, return_state=True)
    return prompt + VOCAB.decode(out)


def test_a_very_low_temperature_and_top_k_1_are_greedy():
    model = tiny_model(layers=2)
    model.dense.kernel.assign(model.dense.kernel * 20.0)  # clear winners, no near-ties
    want = greedy(model, "ROMEO:", 30)
    for seed in (1, 2):
        assert generate(model, VOCAB, ["ROMEO:"], settings(30, 1e-4, seed=seed)) == [want]
        assert generate(model, VOCAB, ["ROMEO:"], settings(30, 1.0, top_k=1, seed=seed)) == [want]


def test_top_k_keeps_the_k_most_likely():
    probs = tf.constant([[0.0, 0.1, 0.4, 0.2, 0.3], [0.0, 0.25, 0.25, 0.3, 0.2]])
    kept = truncate(probs, tf.constant([2, 0]), tf.constant([1.0, 1.0])).numpy()
    np.testing.assert_allclose(kept, [[0, 0, 0.4, 0, 0.3], [0, 0.25, 0.25, 0.3, 0.2]])


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = tf.constant([[0.0, 0.1, 0.4, 0.2, 0.3]] * 4)
    kept = truncate(probs, tf.zeros([4], tf.int32), tf.constant([0.4, 0.5, 0.7, 0.95])).numpy()
    np.testing.assert_allclose(kept, [[0, 0, 0.4, 0, 0],        # 0.4 reaches 0.4
                                      [0, 0, 0.4, 0, 0.3],      # 0.4 does not reach 0.5: add 0.3
                                      [0, 0, 0.4, 0, 0.3],      # 0.7 reaches 0.7
                                      [0, 0.1, 0.4, 0.2, 0.3]])  # 0.9 is short of 0.95: all
    both = truncate(probs[:1], tf.constant([1]), tf.constant([0.95])).numpy()
    np.testing.assert_allclose(both, [[0, 0, 0.4, 0, 0]])  # together: the smaller set


def test_draws_follow_the_truncated_distribution():
    # top_p 0.69, not 0.7: 0.4 + 0.3 is 0.7 only up to the softmax's rounding, which the kernels decide
    probs = truncate(probabilities(tf.math.log(tf.constant([[1e-9, 0.1, 0.4, 0.2, 0.3]] * 20_000)),
                                   tf.ones([20_000])), tf.zeros([20_000], tf.int32), tf.fill([20_000], 0.69))
    u = uniforms(tf.fill([20_000], tf.constant(3, tf.int64)), tf.zeros([20_000], tf.int64),
                 tf.range(20_000, dtype=tf.int64))
    counts = np.bincount(draw(probs, u).numpy(), minlength=5) / 20_000
    np.testing.assert_allclose(counts, [0, 0, 0.4 / 0.7, 0, 0.3 / 0.7], atol=0.015)


def test_uniforms_are_uniform_and_depend_on_seed_row_and_position():
    n = 50_000
    u = uniforms(tf.fill([n], tf.constant(1, tf.int64)), tf.zeros([n], tf.int64), tf.range(n, dtype=tf.int64)).numpy()
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > n / 10 * 0.95
    first = uniforms(tf.constant([1, 1, 2], tf.int64), tf.constant([0, 1, 0], tf.int64), tf.zeros([3], tf.int64)).numpy()
    assert len(set(first.tolist())) == 3


def test_batch_of_prompts_each_gets_exactly_num_chars():
    prompts = ["R", "ROMEO: abba\nMEO", "x?a"]  # different lengths, unknown characters kept as given
    outputs = generate(tiny_model(cell="lstm"), VOCAB, prompts, settings(17, 0.8))
    for prompt, out in zip(prompts, outputs):
        assert out.startswith(prompt) and len(out) == len(prompt) + 17
        assert set(out[len(prompt):]) <= set(VOCAB.chars)


def test_cjk_vocabulary():
    chars = tuple(chr(0x4E00 + i) for i in range(3000))
    vocab = Vocabulary(chars, (1,) * len(chars))
    prompts = ["".join(chars[100:103]), "😀" + chars[0]]
    assert check_prompts(vocab, prompts) == [f"prompt 1 ('😀{chars[0]}') has characters outside the vocabulary, "
                                             "read as [UNK]: '😀'"]
    outputs = generate(tiny_model(vocab), vocab, prompts, settings(25, 1.0, top_k=50, top_p=0.9, seed=5))
    for prompt, out in zip(prompts, outputs):
        assert out.startswith(prompt) and len(out) == len(prompt) + 25
        assert set(out[len(prompt):]) <= set(chars)


RELOAD = textwrap.dedent("""
    import importlib.util, json, os, sys
    sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "charrnn"))]
    assert importlib.util.find_spec("charrnn") is None, "charrnn must not be importable here"
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    args = (tf.constant(json.loads(sys.argv[2])), tf.constant(50), tf.constant(0.8), tf.constant(3), tf.constant(0.9),
            tf.constant(1, tf.int64))
    out = loaded.generate(*args)
    assert int(loaded.signature_version()) == 2
    names = ["prompts", "num_chars", "temperature", "top_k", "top_p", "seed"]
    served = loaded.signatures["serving_default"](**dict(zip(names, args)))
    assert served["output_0"].numpy().tolist() == out.numpy().tolist()
    x, state = loaded.start(args[0])
    rows = len(json.loads(sys.argv[2]))
    text, _, _ = loaded.extend(x, state, tf.constant(50), tf.fill([rows], 0.8), tf.fill([rows], 3), tf.fill([rows], 0.9),
                               tf.fill([rows], tf.constant(1, tf.int64)), tf.range(rows, dtype=tf.int64),
                               tf.zeros([rows], tf.int64))
    assert [p + t for p, t in zip(args[0].numpy(), text.numpy())] == out.numpy().tolist()
    print(json.dumps([s.decode("utf-8") for s in out.numpy()]))
""")


def run_python(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_export_reloads_without_charrnn_and_matches_python(tmp_path, cell):
    generator = Generator(tiny_model(cell=cell, layers=2), VOCAB)
    export(generator, tmp_path / "generator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]  # no temporary left behind
    out = json.loads(run_python(RELOAD, str(tmp_path / "generator"), json.dumps(PROMPTS)).splitlines()[-1])
    assert out == generator.generate_text(PROMPTS, settings(50, 0.8, top_k=3, top_p=0.9, seed=1))


EXPORT = textwrap.dedent("""
    import sys
    from charrnn.sampling.generation import Generator, export
    from charrnn.nn.network import load
    model_dir, out = sys.argv[1:]
    export(Generator(*load(model_dir)), out)
""")


def test_export_is_byte_identical_across_processes(tmp_path):
    save(tiny_model(), VOCAB, tmp_path / "model")
    procs = [subprocess.Popen([sys.executable, "-c", EXPORT, str(tmp_path / "model"), str(tmp_path / name)],
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    assert files.sha256_tree(tmp_path / "a") == files.sha256_tree(tmp_path / "b")


THREADED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from charrnn.nn.network import load
    from charrnn.sampling.generation import Generator, configure_threads
    from charrnn.sampling.settings import SamplingSettings
    model_dir, configure = sys.argv[1], sys.argv[2] == "1"
    if configure:
        configure_threads(0)  # 0: intra-op threads for all cores, as TensorFlow's default
    generator = Generator(*load(model_dir))
    texts = generator.generate_text(["ab", "ba", "a"], SamplingSettings(60, 0.8, 0, 1.0, 3))
    configure_threads()  # after ops ran: leaves the pools as they are, no error
    print(json.dumps([tf.config.threading.get_inter_op_parallelism_threads(),
                      tf.config.threading.get_intra_op_parallelism_threads(), texts]))
""")


def test_a_generating_process_runs_one_inter_op_thread_and_the_same_bits(tmp_path):
    save(tiny_model(layers=2), VOCAB, tmp_path / "model")
    configured, default = (json.loads(run_python(THREADED, str(tmp_path / "model"), flag).splitlines()[-1])
                           for flag in ("1", "0"))
    assert configured[:2] == [1, os.cpu_count()] and default[:2] == [0, 0]  # 0: TensorFlow's default
    assert configured[2] == default[2]


@pytest.mark.parametrize("prompts,match", [
    ([], "non-empty list of prompts"),
    ("ROMEO:", "non-empty list of prompts"),
    (["ab", ""], "prompt 1 is empty"),
    (["ab", None], "prompt 1 must be a string, got NoneType None"),
    ([7], "prompt 0 must be a string, got int 7"),
    ([b"ab"], "prompt 0 must be a string, got bytes"),
    (["ab", "?!"], r"prompt 1 .* no character of the model's vocabulary: .*sample\.prompts"),
    (["ab", "a\udcff"], "prompt 1 is not valid Unicode"),
])
def test_unusable_prompts_are_refused(prompts, match):
    with pytest.raises(SettingsError, match=match):
        check_prompts(VOCAB, prompts)


@pytest.mark.parametrize("values,match", [
    ({"num_chars": 0}, "num_chars must be an integer from 1 to"),
    ({"num_chars": 4294967306}, r"num_chars .* got 4294967306 \(raise the cap with --max-chars\)"),
    ({"temperature": 0.0}, "temperature must be a number from 1e-06 to 100"),
    ({"temperature": 1e-50}, "temperature must be a number from 1e-06"),
    ({"temperature": -1.0}, "temperature must be"),
    ({"seed": -1}, "seed must be an integer from 0 to 2147483647"),
    ({"seed": 10**20}, "seed must be"),
    ({"top_k": -1}, "top_k must be"),
    ({"top_p": 0.0}, "top_p must be > 0 and <= 1"),
    ({"top_p": 1.5}, "top_p must be > 0 and <= 1"),
    ({"top_p": 1e-40}, "top_p must be 0 or of a size a 32-bit float holds"),  # 0 in the graph's float32
    ({"top_p": 1e-300}, "top_p must be 0 or of a size a 32-bit float holds"),
    ({"top_p": 1e-45}, "top_p must be 0 or of a size a 32-bit float holds"),
    ({"temperature": "0.8"}, "temperature must be a finite number"),
    ({"num_chars": True}, "num_chars must be an integer"),
])
def test_invalid_settings_are_refused(values, match):
    with pytest.raises(SettingsError, match=match):
        SamplingSettings.parse(values)


def test_every_problem_is_named_at_once_and_good_values_come_out_typed():
    with pytest.raises(SettingsError, match="num_chars .*; temperature .*; top_p"):
        SamplingSettings.parse({"num_chars": 0, "temperature": 0.0, "top_p": 2.0})
    got = SamplingSettings.parse({"temperature": 1, "top_p": 1})
    assert type(got.temperature) is float and type(got.top_p) is float


def test_settings_defaults_are_the_sample_params():
    from charrnn.core.params import Params

    assert SamplingSettings() == SamplingSettings.from_params(Params().sample)


def test_a_float_the_graph_rounds_to_zero_never_reaches_it():
    """1e-40 is a valid Python float, but the graph's float32 flushes it to zero."""
    generator = Generator(tiny_model(), VOCAB)
    with pytest.raises(SettingsError, match="32-bit float"):
        generator.generate_text(["ab"], SamplingSettings(num_chars=5, top_p=1e-40))


def test_the_graph_refuses_invalid_requests_too():
    generator = Generator(tiny_model(), VOCAB)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_chars must be > 0"):
        generator.generate(tf.constant(["ab"]), 0, 1.0, 0, 1.0, tf.constant(0, tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one character"):
        generator.generate(tf.constant(["ab", ""]), 5, 1.0, 0, 1.0, tf.constant(0, tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="top_p"):
        generator.generate(tf.constant(["ab"]), 5, 1.0, 0, 1.5, tf.constant(0, tf.int64))


# --- the adaptive softmax (train.softmax: adaptive): log-probabilities as the logits -----------

def adaptive_prompts():
    return ["".join(CJK_CHARS[:3]), CJK_CHARS[40], CJK_CHARS[7] + "x" + CJK_CHARS[2]]


@pytest.mark.parametrize("rnn_impl", ["keras", "fused"])
def test_adaptive_generation_matches_a_step_by_step_reference(rnn_impl):
    model = adaptive_model(rnn_impl, layers=2)
    assert model.use_fused() == (rnn_impl == "fused")
    prompts = adaptive_prompts()
    assert generate(model, CJK_VOCAB, prompts, settings(12, 0.9, seed=42)) == reference(model, CJK_VOCAB, prompts, 12, 0.9, 42)


def test_adaptive_model_never_generates_unk_even_when_it_prefers_it():
    model = adaptive_model()
    head = model.head.head
    bias = head.bias.numpy()
    bias[model.config.clusters[0].index(UNK_ID)] = 1e4
    head.bias.assign(bias)
    prompts = adaptive_prompts()
    for prompt, out in zip(prompts, generate(model, CJK_VOCAB, prompts, settings(200, 1.0, seed=3))):
        assert len(out) == len(prompt) + 200 and UNK not in out[len(prompt):]


def test_adaptive_export_matches_python_and_batches_do_not_matter(tmp_path):
    generator = Generator(adaptive_model(units=32, layers=2), CJK_VOCAB)
    prompts = adaptive_prompts()
    export(generator, tmp_path / "generator")
    out = json.loads(run_python(RELOAD, str(tmp_path / "generator"), json.dumps(prompts)).splitlines()[-1])
    assert out == generator.generate_text(prompts, settings(50, 0.8, top_k=3, top_p=0.9, seed=1))
    alone = generator.generate_text(prompts[:1], settings(30, 1.0, seed=9))[0]
    assert generator.generate_text(prompts, settings(30, 1.0, seed=9))[0] == alone


# --- the exported contract: one answer per prompt, a signature version, the previous version served -

@pytest.mark.parametrize("rows", [1, 2, 3, 64])
def test_every_function_returns_one_row_per_prompt(rows):
    generator = Generator(tiny_model(layers=2), VOCAB)
    prompts = [PROMPTS[i % 3] for i in range(rows)]
    x, state = generator.start(tf.constant(prompts))
    assert x.shape[0] == state.shape[0] == rows
    fill = lambda value, dtype: tf.fill([rows], tf.constant(value, dtype))  # noqa: E731
    text, x, state = generator.extend(x, state, tf.constant(5), fill(0.8, tf.float32), fill(0, tf.int32),
                                      fill(1.0, tf.float32), fill(3, tf.int64), tf.range(rows, dtype=tf.int64),
                                      fill(0, tf.int64))
    assert text.shape[0] == x.shape[0] == state.shape[0] == rows
    out = generator.generate(tf.constant(prompts), 5, 0.8, 0, 1.0, tf.constant(3, tf.int64))
    assert out.shape == (rows,)
    assert [t.decode() for t in out.numpy()] == generator.generate_text(prompts, settings(5, 0.8, seed=3))
    assert int(generator.signature_version()) == SIGNATURE_VERSION == 2


def test_a_generator_exported_by_signature_version_1_is_served_through_the_adapter():
    """tests/data: a model and the generator charrnn exported from it before signature versions."""
    from charrnn.nn.network import load

    old = tf.saved_model.load(str(V1 / "generator-v1"))
    assert not hasattr(old, "signature_version")
    assert old.generate(tf.constant(["ROMEO:"]), 5, 0.8, tf.constant(3, tf.int64), 0, 1.0).shape == (2,)  # the v1 bug
    engine = Engine.load(V1 / "generator-v1")
    assert engine.version == 1
    model, vocab = load(V1 / "model-v1")
    today = Generator(model, vocab)
    for prompts in (["ROMEO:"], ["ROMEO:", "JULIET:", "a"]):
        s = settings(40, 0.8, top_p=0.9, seed=3)
        assert engine.generate_text(prompts, s, vocab) == today.generate_text(prompts, s)


def test_an_unknown_signature_version_or_a_foreign_savedmodel_is_one_clear_error(tmp_path):
    class Future(tf.Module):
        @tf.function(input_signature=[])
        def signature_version(self):
            return tf.constant(99)

    future = Future()
    for name in ("start", "extend", "generate"):
        setattr(future, name, future.signature_version)
    tf.saved_model.save(future, str(tmp_path / "future"))
    with pytest.raises(ExportError, match=r"signature version 99; this charrnn runs versions 1, 2"):
        Engine.load(tmp_path / "future")
    assert KNOWN_VERSIONS == (1, 2)

    class Foreign(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
        def __call__(self, x):
            return x

    tf.saved_model.save(Foreign(), str(tmp_path / "foreign"))
    with pytest.raises(ExportError, match="not a charrnn generator"):
        Engine.load(tmp_path / "foreign")
    with pytest.raises(ExportError, match="not a loadable SavedModel"):
        Engine.load(tmp_path / "nothing-here")
