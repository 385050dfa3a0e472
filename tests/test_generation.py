import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn import files
from charrnn.generation import Generator, GenerationError, export, generate, sample_ids, unknown_chars
from charrnn.model import ModelConfig, build, save
from charrnn.vocab import UNK, UNK_ID, Vocabulary

VOCAB = Vocabulary(tuple(sorted(set("\n :ABEMORabcde"))), (1,) * 14)
PROMPTS = ["ROMEO:", "a", "Abba"]


def tiny_model(vocab=VOCAB, cell="gru", layers=1, seed=0):
    keras.utils.set_random_seed(seed)
    return build(ModelConfig(vocab_size=vocab.size, embedding_dim=8, units=16, layers=layers, cell=cell,
                             vocab_fingerprint=vocab.fingerprint))


def reference(model, vocab, prompts, num_chars, pick):
    """The straightforward way: the full Keras model, one character per Python step.

    Returns the generated ids of each row and the logits of every step [B, steps, V].
    """
    ids = [list(vocab.encode(p)) for p in prompts]
    lengths = [len(row) for row in ids]
    x = np.array([row[0] for row in ids], np.int32)
    states = model.initial_states(len(prompts))
    generated, step_logits = [[] for _ in prompts], []
    for t in range(max(lengths) - 1 + num_chars):
        logits, states = model(x[:, None], states, return_state=True)
        logits = logits[:, 0].numpy()
        step_logits.append(logits)
        picked = pick(logits, t)
        for r, row in enumerate(ids):
            if t >= lengths[r] - 1 and len(generated[r]) < num_chars:
                generated[r].append(int(picked[r]))
        x = np.array([row[t + 1] if t + 1 < len(row) else picked[r] for r, row in enumerate(ids)], np.int32)
    return generated, np.stack(step_logits, axis=1)


def stateless_pick(temperature, seed):
    def pick(logits, t):
        logits = logits.copy()
        logits[:, UNK_ID] = -np.inf
        step_seed = tf.constant([seed, t], tf.int64)
        return tf.random.stateless_categorical(logits / temperature, 1, step_seed, dtype=tf.int32)[:, 0].numpy()
    return pick


def greedy_pick(logits, t):
    logits = logits.copy()
    logits[:, UNK_ID] = -np.inf
    return logits.argmax(axis=1)


def suffix_ids(vocab, prompts, outputs):
    return [list(vocab.encode(out[len(p):])) for p, out in zip(prompts, outputs)]


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("gru", 2), ("lstm", 1), ("lstm", 2)])
def test_compiled_loop_matches_step_by_step_reference(cell, layers):
    model = tiny_model(cell=cell, layers=layers)
    num_chars, temperature, seed = 8, 0.9, 42
    want_ids, want_logits = reference(model, VOCAB, PROMPTS, num_chars, stateless_pick(temperature, seed))

    ragged = tf.ragged.constant([VOCAB.encode(p) for p in PROMPTS], dtype=tf.int32)
    compiled = tf.function(lambda ids, lengths: sample_ids(
        model, ids, lengths, tf.constant(num_chars), tf.constant(temperature), tf.constant(seed, tf.int64),
        with_logits=True))
    got_ids, got_logits = compiled(ragged.to_tensor(), tf.cast(ragged.row_lengths(), tf.int32))

    np.testing.assert_allclose(got_logits.numpy(), want_logits, rtol=1e-5, atol=1e-5)
    assert got_ids.numpy().tolist() == want_ids
    texts = generate(model, VOCAB, PROMPTS, num_chars, temperature, seed)
    assert texts == [p + VOCAB.decode(ids) for p, ids in zip(PROMPTS, want_ids)]


def test_unk_is_never_generated_even_when_the_model_prefers_it():
    model = tiny_model()
    bias = model.dense.bias.numpy()
    bias[UNK_ID] = 1e4
    model.dense.bias.assign(bias)
    outputs = generate(model, VOCAB, PROMPTS, 200, 1.0, seed=3)
    for ids in suffix_ids(VOCAB, PROMPTS, outputs):
        assert len(ids) == 200 and UNK_ID not in ids
    assert not any(UNK in out[len(p):] for p, out in zip(PROMPTS, outputs))


def test_same_seed_same_text_different_seed_different_text():
    generator = Generator(tiny_model(), VOCAB)
    first = generator.generate_text(PROMPTS, 40, 1.0, seed=7)
    assert generator.generate_text(PROMPTS, 40, 1.0, seed=7) == first
    assert generator.generate_text(PROMPTS, 40, 1.0, seed=8) != first


def test_very_low_temperature_is_greedy():
    model = tiny_model(layers=2)
    model.dense.kernel.assign(model.dense.kernel * 20.0)  # clear winners, no near-ties
    want_ids, _ = reference(model, VOCAB, PROMPTS, 30, greedy_pick)
    for seed in (1, 2):
        assert suffix_ids(VOCAB, PROMPTS, generate(model, VOCAB, PROMPTS, 30, 1e-4, seed)) == want_ids


def test_batch_of_prompts_each_gets_exactly_num_chars():
    prompts = ["R", "ROMEO: abba\nMEO", "x?a"]  # different lengths, unknown characters kept as given
    outputs = generate(tiny_model(cell="lstm"), VOCAB, prompts, 17, 0.8, seed=0)
    for prompt, out in zip(prompts, outputs):
        assert out.startswith(prompt) and len(out) == len(prompt) + 17
        assert set(out[len(prompt):]) <= set(VOCAB.chars)


def test_cjk_vocabulary():
    chars = tuple(chr(0x4E00 + i) for i in range(3000))
    vocab = Vocabulary(chars, (1,) * len(chars))
    prompts = ["".join(chars[100:103]), "😀" + chars[0]]
    assert unknown_chars(vocab, prompts) == [[], ["😀"]]
    outputs = generate(tiny_model(vocab), vocab, prompts, 25, 1.0, seed=5)
    for prompt, out in zip(prompts, outputs):
        assert out.startswith(prompt) and len(out) == len(prompt) + 25
        assert set(out[len(prompt):]) <= set(chars)


RELOAD = textwrap.dedent("""
    import importlib.util, json, os, sys
    sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "charrnn"))]
    assert importlib.util.find_spec("charrnn") is None, "charrnn must not be importable here"
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    args = tf.constant(json.loads(sys.argv[2])), tf.constant(50), tf.constant(0.8), tf.constant(1, tf.int64)
    out = loaded.generate(*args)
    served = loaded.signatures["serving_default"](**dict(zip(["prompts", "num_chars", "temperature", "seed"], args)))
    assert served["output_0"].numpy().tolist() == out.numpy().tolist()
    print(json.dumps([s.decode("utf-8") for s in out.numpy()]))
""")


def run_python(script, *args):
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_export_reloads_without_charrnn_and_matches_python(tmp_path):
    model = tiny_model(cell="lstm", layers=2)
    generator = Generator(model, VOCAB)
    export(generator, tmp_path / "generator")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator"]  # no temporary left behind
    out = json.loads(run_python(RELOAD, str(tmp_path / "generator"), json.dumps(PROMPTS)).splitlines()[-1])
    assert out == generator.generate_text(PROMPTS, 50, 0.8, seed=1)


EXPORT = textwrap.dedent("""
    import sys
    from charrnn.generation import Generator, export
    from charrnn.model import load, load_vocab
    model_dir, out = sys.argv[1:]
    export(Generator(load(model_dir), load_vocab(model_dir)), out)
""")


def test_export_is_byte_identical_across_processes(tmp_path):
    save(tiny_model(), VOCAB, tmp_path / "model")
    procs = [subprocess.Popen([sys.executable, "-c", EXPORT, str(tmp_path / "model"), str(tmp_path / name)],
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    assert files.sha256_tree(tmp_path / "a") == files.sha256_tree(tmp_path / "b")


@pytest.mark.parametrize("prompts,num_chars,temperature,match", [
    ([], 10, 1.0, "non-empty list of prompts"),
    ("ROMEO:", 10, 1.0, "non-empty list of prompts"),
    (["ab", ""], 10, 1.0, "prompt 1 is empty"),
    (["ab", "?!"], 10, 1.0, "prompt 1 .* no character of the vocabulary"),
    (["ab"], 0, 1.0, "num_chars must be a positive integer"),
    (["ab"], 10, 0.0, "temperature must be > 0"),
    (["ab"], 10, -1.0, "temperature must be > 0"),
])
def test_invalid_requests_raise_generation_error(prompts, num_chars, temperature, match):
    with pytest.raises(GenerationError, match=match):
        generate(tiny_model(), VOCAB, prompts, num_chars, temperature, seed=0)


def test_graph_rejects_invalid_requests_too():
    generator = Generator(tiny_model(), VOCAB)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_chars must be > 0"):
        generator.generate(tf.constant(["ab"]), tf.constant(0), tf.constant(1.0), tf.constant(0, tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one character"):
        generator.generate(tf.constant(["ab", ""]), tf.constant(5), tf.constant(1.0), tf.constant(0, tf.int64))
