"""The text generator: one compiled sampling loop, exported as a self-contained SavedModel.

`Generator.generate` is a single tf.function: it splits the prompts into characters, looks them up
in the vocabulary, runs the RNN one character at a time inside a tf.while_loop (teacher-forcing each
row through its own prompt, then feeding back its own samples), samples with a temperature and a
stateless seed, and joins the text. [UNK] is never sampled. The Python `generate` and the exported
SavedModel run this same function, so a seed gives the same text in both.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from charrnn import files
from charrnn.vocab import UNK_ID, Vocabulary


class GenerationError(ValueError):
    pass


def unknown_chars(vocab: Vocabulary, prompts: list[str]) -> list[list[str]]:
    """For each prompt, the characters the vocabulary lacks (they are fed to the model as [UNK])."""
    return [vocab.unknown_chars(p) for p in prompts]


def validate(vocab: Vocabulary, prompts: list[str], num_chars: int, temperature: float) -> None:
    if isinstance(prompts, str) or not prompts:
        raise GenerationError("give a non-empty list of prompts, e.g. ['ROMEO:']")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise GenerationError(f"prompt {i} is empty: give at least one character to start from")
        if len(vocab.unknown_chars(prompt)) == len(set(prompt)):
            raise GenerationError(f"prompt {i} ({prompt!r}) has no character of the vocabulary: "
                                  "start from characters the model was trained on")
    if not num_chars > 0:
        raise GenerationError(f"num_chars must be a positive integer, got {num_chars}")
    if not temperature > 0:
        raise GenerationError(f"temperature must be > 0 (e.g. 0.8; lower is more conservative), got {temperature}")


def step_fn(model):
    """The one-character step the sampling loop runs: fastgru's when the model uses the fused
    GRU (the same function, less work per character), else the Keras cells' (`step`)."""
    if model.use_fused(training=False):
        from charrnn import fastgru

        return fastgru.step_fn(model)
    return lambda ids, states: step(model, ids, states)


def step(model, ids, states):
    """One character through the model's own layers: ids [B] -> logits [B, V], new states."""
    x = model.embedding(ids)
    new_states = []
    for rnn, state in zip(model.rnns, states):
        x, state = rnn.cell(x, state, training=False)
        new_states.append(list(state))
    return model.dense(x), new_states


def sample(logits, temperature, seed):
    """Draw one id per row from softmax(logits / temperature), never [UNK]."""
    unk_mask = tf.one_hot(UNK_ID, tf.shape(logits)[1], on_value=float("-inf"), off_value=0.0)
    masked = logits + unk_mask
    # Shift by the max first: at a tiny temperature, logits / temperature would overflow to inf.
    scaled = (masked - tf.reduce_max(masked, axis=1, keepdims=True)) / temperature
    return tf.random.stateless_categorical(scaled, 1, seed, dtype=tf.int32)[:, 0]


def sample_ids(model, prompt_ids, lengths, num_chars, temperature, seed, with_logits=False):
    """Generate `num_chars` ids after each prompt, all rows in one loop.

    prompt_ids [B, P] int32 (right-padded), lengths [B] int32 (>= 1). Step t feeds row r its
    prompt character t while t < lengths[r], else the id it sampled at step t - 1; the sample of
    step t is drawn with the stateless seed (seed, t). Returns ids [B, num_chars], and with
    `with_logits` also the logits of every step [B, steps, V].
    """
    max_len = tf.shape(prompt_ids)[1]
    steps = max_len - 1 + num_chars
    seed = tf.cast(seed, tf.int64)
    one_step = step_fn(model)

    def body(t, x, states, samples, logits_seen):
        logits, states = one_step(x, states)
        next_id = sample(logits, temperature, tf.stack([seed, tf.cast(t, tf.int64)]))
        in_prompt = t + 1 < lengths
        x = tf.where(in_prompt, prompt_ids[:, tf.minimum(t + 1, max_len - 1)], next_id)
        if with_logits:
            logits_seen = logits_seen.write(t, logits)
        return t + 1, x, states, samples.write(t, next_id), logits_seen

    loop_vars = (tf.constant(0), prompt_ids[:, 0], model.initial_states(tf.shape(prompt_ids)[0]),
                 tf.TensorArray(tf.int32, size=steps), tf.TensorArray(tf.float32, size=steps))
    _, _, _, samples, logits_seen = tf.while_loop(lambda t, *_: t < steps, body, loop_vars)
    # Row r's first generated id is the one sampled at step lengths[r] - 1.
    positions = lengths[:, None] - 1 + tf.range(num_chars)[None, :]
    ids = tf.gather(tf.transpose(samples.stack()), positions, batch_dims=1)
    if with_logits:
        return ids, tf.transpose(logits_seen.stack(), [1, 0, 2])
    return ids


class Generator(tf.Module):
    """A CharRNN and its vocabulary, with one exportable `generate` graph."""

    def __init__(self, model, vocab: Vocabulary):
        super().__init__(name="generator")
        # Track only the weights, not the Keras objects: the SavedModel then holds just this
        # module's graph, with no Keras layers, configs or extra traced model calls.
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "vocab", vocab)
        self.weights = [w.value for w in model.weights]  # the underlying tf.Variables
        chars = tf.constant(vocab.chars, tf.string)
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(chars, tf.range(1, vocab.size, dtype=tf.int32)),
            default_value=UNK_ID)
        self.id_to_char = tf.constant(vocab.id_to_char, tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"),
                                  tf.TensorSpec([], tf.int32, name="num_chars"),
                                  tf.TensorSpec([], tf.float32, name="temperature"),
                                  tf.TensorSpec([], tf.int64, name="seed")])
    def generate(self, prompts, num_chars, temperature, seed):
        """Each prompt (as given) followed by `num_chars` generated characters."""
        chars = tf.strings.unicode_split(prompts, "UTF-8")
        ids = tf.ragged.map_flat_values(self.char_to_id.lookup, chars)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        checks = [
            tf.debugging.assert_positive(tf.size(prompts), message="no prompts given"),
            tf.debugging.assert_positive(lengths, message="every prompt needs at least one character"),
            tf.debugging.assert_positive(num_chars, message="num_chars must be > 0"),
            tf.debugging.assert_positive(temperature, message="temperature must be > 0"),
        ]
        with tf.control_dependencies(checks):
            new_ids = sample_ids(self.model, ids.to_tensor(UNK_ID), lengths, num_chars, temperature, seed)
        return prompts + tf.strings.reduce_join(tf.gather(self.id_to_char, new_ids), axis=1)

    def generate_text(self, prompts: list[str], num_chars: int, temperature: float, seed: int) -> list[str]:
        validate(self.vocab, prompts, num_chars, temperature)
        out = self.generate(tf.constant(prompts, tf.string), tf.constant(num_chars, tf.int32),
                            tf.constant(temperature, tf.float32), tf.constant(seed, tf.int64))
        return [s.decode("utf-8") for s in out.numpy()]


def generate(model, vocab: Vocabulary, prompts: list[str], num_chars: int, temperature: float,
             seed: int) -> list[str]:
    """Generate after each prompt. For many calls, build one Generator and reuse it (no retracing)."""
    return Generator(model, vocab).generate_text(prompts, num_chars, temperature, seed)


def export(generator: Generator, path: str | Path) -> None:
    """Write `generator` as a SavedModel that `tf.saved_model.load(path).generate(...)` runs alone."""
    with files.atomic_path(path) as tmp:
        tf.saved_model.save(generator, str(tmp), signatures={"serving_default": generator.generate})
        _derive_fingerprint_uuid(tmp / "fingerprint.pb")


def _derive_fingerprint_uuid(path: Path) -> None:
    """Replace the random uuid TensorFlow writes into fingerprint.pb by one derived from the
    fingerprint's content hashes, so the same graph and weights export to the same bytes (DVC)."""
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))
