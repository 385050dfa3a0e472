"""The text generator: compiled sampling, exported as a SavedModel, and the one place that calls
the exported graphs (`Engine`).

`Generator` is a tf.Module with graph functions, all exported (signature version 2):
- `start(prompts)`: look the prompts' characters up in the vocabulary and run every row through
  all but its last prompt character: the state to generate from, and the character to feed next.
- `extend(x, state, num_chars, temperature, top_k, top_p, seed, row, position)`: generate
  `num_chars` more characters for every row, each row with its own sampling settings; returns
  the new text of each row and where it stands (x, state).
- `generate(prompts, num_chars, temperature, top_k, top_p, seed)`: start + extend in one call,
  one answer per prompt: the prompt followed by its text.
- `signature_version()`: 2. Version 1 (models exported before it existed) returned padded rows
  from `start` and `generate` for a lone prompt and took generate's settings in another order;
  `Engine` serves both, and refuses a version it does not know with one clear line.
The settings of every function come in `SamplingSettings`' order.

Sampling. The next character is drawn from softmax(logits / temperature), [UNK] excluded, cut to
the `top_k` most likely characters (0: off) and to the nucleus, the smallest set whose
probability reaches `top_p` (1.0: off); both together keep the smaller set. The draw is an
inverse-CDF lookup with a uniform number that depends only on (seed, row, position): the row's
index within its request and the index of the character among those it generated. So a request's
text does not depend on what else shares its batch, on how its generation is cut into chunks, or
on which of Python, the SavedModel, the MLflow model or the HTTP service runs it: each row's
products are computed by themselves (charrnn.nn.stepping), so its bits do not depend on the
batch's size either.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS
from charrnn.data.vocab import UNK_ID, Vocabulary
from charrnn.nn import fastgru, pools, stepping
from charrnn.sampling.settings import SamplingSettings, check_prompts

SIGNATURE_VERSION = 2
KNOWN_VERSIONS = (1, 2)
CHUNK = 1_000  # characters per graph call when generating in chunks (Ctrl-C and memory act in between)


class ExportError(CharrnnError):
    """An exported generator this version of charrnn cannot run."""


def configure_threads(threads: int = 0) -> None:
    """TensorFlow's thread pools for a process that generates, before it runs any op
    (charrnn.nn.pools): `threads` intra-op threads (0: all cores; the sample stage passes
    `train.threads`) and one inter-op thread. A step is a chain of small ops, and with more
    inter-op threads each op hops to another one (one prompt at GRU 1024: 12-21% more
    characters per second, BENCHMARKS.md 2026-12-07)."""
    pools.fix(threads, inter_op=1)


# --- sampling ----------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15


def _splitmix64(x):
    x = x + tf.constant(_GOLDEN, tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, tf.uint64))) * tf.constant(0xBF58476D1CE4E5B9, tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(27, tf.uint64))) * tf.constant(0x94D049BB133111EB, tf.uint64)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(31, tf.uint64)))


def uniforms(seed, row, position):
    """One number in [0, 1) per row, a function of (seed, row, position) only (SplitMix64)."""
    return uniforms_at(row_keys(seed, row), position)


def row_keys(seed, row):
    """The per-row half of `uniforms`: computed once per call, outside the sampling loop."""
    return _splitmix64(tf.bitwise.bitwise_xor(_splitmix64(tf.cast(seed, tf.uint64)), tf.cast(row, tf.uint64)))


def uniforms_at(key, position):
    bits = _splitmix64(key + tf.cast(position, tf.uint64) * tf.constant(_GOLDEN, tf.uint64))
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(11, tf.uint64)), tf.float64) * 2.0**-53


def probabilities(logits, temperature):
    """softmax(logits / temperature) per row, [UNK] excluded; temperature [B]."""
    return tempered(logits, unk_mask(tf.shape(logits)[1]), temperature[:, None])


def unk_mask(vocab_size):
    return tf.one_hot(UNK_ID, vocab_size, on_value=float("-inf"), off_value=0.0)


def tempered(logits, unk, temperature):
    """`probabilities` with its loop invariants given: the [UNK] mask and temperature [B, 1]."""
    masked = logits + unk
    # Shift by the max first: at a tiny temperature, logits / temperature would overflow.
    return stepping.softmax((masked - tf.reduce_max(masked, axis=1, keepdims=True)) / temperature)


def truncate(probs, top_k, top_p):
    """Zero every probability outside the top_k (0: all) and outside the nucleus of mass top_p."""
    vocab = tf.shape(probs)[1]
    ranked = tf.sort(probs, axis=1, direction="DESCENDING")
    before = tf.cumsum(ranked, axis=1, exclusive=True)  # the mass of the more likely characters
    in_nucleus = tf.reduce_sum(tf.cast(before < top_p[:, None], tf.int32), axis=1)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    keep = tf.maximum(tf.minimum(k, in_nucleus), 1)
    threshold = tf.gather(ranked, keep - 1, batch_dims=1)
    return tf.where(probs >= threshold[:, None], probs, 0.0)


def draw(probs, u):
    """The id whose cumulative probability first exceeds u * total, per row (inverse CDF)."""
    cdf = tf.cumsum(tf.cast(probs, tf.float64), axis=1)
    picked = tf.searchsorted(cdf, (u * cdf[:, -1])[:, None], side="right")[:, 0]  # how many are <= it
    picked = tf.minimum(picked, tf.shape(probs)[1] - 1)
    # u * total can round up to the total: then take the most likely character, never a zero one
    return tf.where(tf.gather(probs, picked, batch_dims=1) > 0, picked, tf.argmax(probs, axis=1, output_type=tf.int32))


def sample(logits, temperature, top_k, top_p, u):
    """One id per row from the truncated, tempered distribution; never [UNK]."""
    probs = probabilities(logits, temperature)
    return draw(tf.cond(filtering(top_k, top_p), lambda: truncate(probs, top_k, top_p), lambda: probs), u)


def filtering(top_k, top_p):
    """Whether any row asks for top-k or nucleus truncation."""
    return tf.reduce_any(top_k > 0) | tf.reduce_any(top_p < 1.0)


# --- the model, one character at a time ---------------------------------------------------------


def step_fn(model, table=None):
    """The one-character step: charrnn.nn.stepping's, each row by itself (`table`: a GRU's
    precomputed first-layer projection); the Keras cells' (`step`) under a mixed-precision policy,
    which only a GPU runs."""
    if stepping.runs(model):
        return stepping.step_fn(model, table)
    return lambda ids, states: step(model, ids, states)


def step(model, ids, states):
    """One character through the model's own layers: ids [B] -> logits [B, V], new states."""
    x = model.embedding(ids)
    new_states = []
    for rnn, state in zip(model.rnns, states):
        x, state = rnn.cell(x, state, training=False)
        new_states.append(list(state))
    return model.logits(x), new_states


def _where_rows(active, new, old):
    return [[tf.where(active[:, None], n, o) for n, o in zip(ns, os)] for ns, os in zip(new, old)]


def feed_prompts(one_step, initial_states, prompt_ids, lengths):
    """Run each row through all but its last prompt character (rows of other lengths wait, their
    state unchanged). prompt_ids [B, P] right-padded, lengths [B] >= 1 -> (x [B], states)."""
    def body(t, states):
        _, new_states = one_step(prompt_ids[:, t], states)
        return t + 1, _where_rows(t < lengths - 1, new_states, states)

    _, states = tf.while_loop(lambda t, _: t < tf.reduce_max(lengths) - 1, body, (tf.constant(0), initial_states))
    return tf.gather(prompt_ids, lengths - 1, batch_dims=1), states


def sample_ids(one_step, x, states, num_chars, temperature, top_k, top_p, seed, row, position):
    """Generate num_chars ids per row from (x, states): ids [B, num_chars], x, states.
    Every setting is per row ([B]); character j of this call is drawn at position + j. What
    `sample` and `uniforms` compute per character is split here: everything that does not change
    from one character to the next is computed once, the uniform numbers of the whole call too
    (they depend on seed, row and position only: [num_chars, B] at once instead of a dozen ops a
    character), and the loop without truncation is a loop of its own (on one prompt, a step is
    small enough that these ops count)."""
    temperature = temperature[:, None]
    steps = tf.range(tf.cast(num_chars, tf.int64))
    u_by_step = tf.transpose(uniforms_at(row_keys(seed, row)[:, None], position[:, None] + steps[None, :]))

    def loop(truncating):
        def body(t, x, states, ids):
            logits, states = one_step(x, states)
            probs = tempered(logits, unk_mask(tf.shape(logits)[1]), temperature)  # the mask: a constant
            if truncating:
                probs = truncate(probs, top_k, top_p)
            x = draw(probs, u_by_step[t])
            return t + 1, x, states, ids.write(t, x)

        loop_vars = (tf.constant(0), x, states, tf.TensorArray(tf.int32, size=num_chars))
        _, last, states_out, ids = tf.while_loop(lambda t, *_: t < num_chars, body, loop_vars)
        ids = tf.cond(num_chars > 0, lambda: tf.transpose(ids.stack()),
                      lambda: tf.zeros([tf.shape(x)[0], 0], tf.int32))
        return ids, last, states_out

    return tf.cond(filtering(top_k, top_p), lambda: loop(True), lambda: loop(False))


class Generator(tf.Module):
    """A CharRNN and its vocabulary, with the exportable graphs start, extend and generate."""

    def __init__(self, model, vocab: Vocabulary):
        super().__init__(name="generator")
        # Track only the weights, not the Keras objects: the SavedModel then holds just this
        # module's graphs, with no Keras layers, configs or extra traced model calls.
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "vocab", vocab)
        self.weights = [w.value for w in model.weights]  # the underlying tf.Variables
        self.table = None
        if stepping.needs_table(model):
            self.table = tf.Variable(fastgru.input_table(model), trainable=False, name="input_table")
        chars = tf.constant(vocab.chars, tf.string)
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(chars, tf.range(1, vocab.size, dtype=tf.int32)),
            default_value=UNK_ID)
        self.id_to_char = tf.constant(vocab.id_to_char, tf.string)
        self.state_sizes = [model.config.units] * (len(model.rnns) * (1 if model.config.cell == "gru" else 2))

    def _pack(self, states):
        return tf.concat([s for layer in states for s in layer], axis=1)

    def _unpack(self, state):
        flat = tf.split(state, self.state_sizes, axis=1)
        per_layer = len(flat) // len(self.model.rnns)
        return [flat[i:i + per_layer] for i in range(0, len(flat), per_layer)]

    def _one_step(self):
        return step_fn(self.model, None if self.table is None else self.table.value())

    def _start(self, prompts):
        chars = tf.strings.unicode_split(prompts, "UTF-8")
        ids = tf.ragged.map_flat_values(self.char_to_id.lookup, chars)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        rows = tf.shape(lengths)[0]
        with tf.control_dependencies([
                tf.debugging.assert_positive(tf.size(prompts), message="no prompts given"),
                tf.debugging.assert_positive(lengths, message="every prompt needs at least one character")]):
            prompt_ids = ids.to_tensor(UNK_ID)
        x, states = feed_prompts(self._one_step(), self.model.initial_states(rows), prompt_ids, lengths)
        return x, self._pack(states)

    def _extend(self, x, state, num_chars, temperature, top_k, top_p, seed, row, position):
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(num_chars, message="num_chars must be >= 0"),
                tf.debugging.assert_positive(temperature, message="temperature must be > 0"),
                tf.debugging.assert_non_negative(top_k, message="top_k must be >= 0"),
                tf.debugging.assert_positive(top_p, message="top_p must be > 0 and <= 1"),
                tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be > 0 and <= 1")]):
            x = tf.identity(x)
        ids, x, states = sample_ids(self._one_step(), x, self._unpack(state), num_chars, temperature, top_k, top_p,
                                    seed, row, position)
        text = tf.strings.reduce_join(tf.gather(self.id_to_char, ids), axis=1)
        return text, x, self._pack(states)

    @tf.function(input_signature=[])
    def signature_version(self):
        """The version of these functions' signatures (see the module docstring)."""
        return tf.constant(SIGNATURE_VERSION)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts")])
    def start(self, prompts):
        """The state after all but the last character of each prompt, and that last character."""
        return self._start(prompts)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="x"),
                                  tf.TensorSpec([None, None], tf.float32, name="state"),
                                  tf.TensorSpec([], tf.int32, name="num_chars"),
                                  tf.TensorSpec([None], tf.float32, name="temperature"),
                                  tf.TensorSpec([None], tf.int32, name="top_k"),
                                  tf.TensorSpec([None], tf.float32, name="top_p"),
                                  tf.TensorSpec([None], tf.int64, name="seed"),
                                  tf.TensorSpec([None], tf.int64, name="row"),
                                  tf.TensorSpec([None], tf.int64, name="position")])
    def extend(self, x, state, num_chars, temperature, top_k, top_p, seed, row, position):
        """num_chars more characters per row: (text [B], x, state)."""
        return self._extend(x, state, num_chars, temperature, top_k, top_p, seed, row, position)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="prompts"),
                                  tf.TensorSpec([], tf.int32, name="num_chars"),
                                  tf.TensorSpec([], tf.float32, name="temperature"),
                                  tf.TensorSpec([], tf.int32, name="top_k"),
                                  tf.TensorSpec([], tf.float32, name="top_p"),
                                  tf.TensorSpec([], tf.int64, name="seed")])
    def generate(self, prompts, num_chars, temperature, top_k, top_p, seed):
        """Each prompt (as given) followed by `num_chars` generated characters, one answer per
        prompt; row i of the batch samples as row i (seed, i, position)."""
        with tf.control_dependencies([tf.debugging.assert_positive(num_chars, message="num_chars must be > 0")]):
            x, state = self._start(prompts)
            rows = tf.shape(x)[0]
            fill = tf.ones([rows], tf.int64)
            text, _, _ = self._extend(x, state, num_chars, tf.fill([rows], temperature), tf.fill([rows], top_k),
                                      tf.fill([rows], top_p), seed * fill, tf.range(tf.cast(rows, tf.int64)), 0 * fill)
        return prompts + text

    def stream(self, prompts: list[str], settings: SamplingSettings, chunk: int = CHUNK,
               max_chars: int = MAX_NUM_CHARS) -> Iterator[list[str]]:
        """The generated text in pieces of up to `chunk` characters per row (prompts excluded)."""
        return Engine(self).stream(prompts, settings, self.vocab, chunk, max_chars)

    def generate_text(self, prompts: list[str], settings: SamplingSettings, max_chars: int = MAX_NUM_CHARS) -> list[str]:
        """Each prompt followed by its generated text."""
        return Engine(self).generate_text(prompts, settings, self.vocab, max_chars)


def generate(model, vocab: Vocabulary, prompts: list[str], settings: SamplingSettings) -> list[str]:
    """Generate after each prompt. For many calls, build one Generator and reuse it (no retracing)."""
    return Generator(model, vocab).generate_text(prompts, settings)


# --- running the graphs: in-process or exported, any known signature version ---------------------


@dataclass
class Rows:
    """Rows being generated, one entry per row in each array: where a row stands (x, state, the
    position of its next character, the characters it has left) and its own settings."""

    x: np.ndarray
    state: np.ndarray
    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray
    seed: np.ndarray
    row: np.ndarray
    position: np.ndarray
    left: np.ndarray

    @classmethod
    def of(cls, x, state, settings: SamplingSettings) -> "Rows":
        """The rows of one request: x and state from `Engine.start`, row i its prompt i."""
        k = len(x)
        return cls(np.asarray(x), np.asarray(state), np.full(k, settings.temperature, np.float32),
                   np.full(k, settings.top_k, np.int32), np.full(k, settings.top_p, np.float32),
                   np.full(k, settings.seed, np.int64), np.arange(k, dtype=np.int64), np.zeros(k, np.int64),
                   np.full(k, settings.num_chars, np.int64))

    def __len__(self) -> int:
        return len(self.x)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def concat(self, other: "Rows") -> "Rows":
        return Rows(**{k: np.concatenate([v, other.arrays()[k]]) for k, v in self.arrays().items()})

    def select(self, mask_or_index) -> "Rows":
        return Rows(**{k: v[mask_or_index] for k, v in self.arrays().items()})


class Engine:
    """Runs a generator's graphs: a `Generator` in this process, or an exported one loaded with
    tf.saved_model.load (signature version 1 or 2). The only caller of those graphs."""

    def __init__(self, graphs, version: int | None = None):
        self.graphs = graphs
        self.version = SIGNATURE_VERSION if isinstance(graphs, Generator) else version or exported_version(graphs)

    @classmethod
    def load(cls, path: str | Path) -> "Engine":
        """An exported generator (a SavedModel directory), its signature version checked."""
        try:
            graphs = tf.saved_model.load(str(path))
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise ExportError(f"{path} is not a loadable SavedModel ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
        return cls(graphs)

    def start(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(x, state) of each prompt, one row each."""
        x, state = self.graphs.start(tf.constant(prompts, tf.string))
        rows = len(prompts)  # version 1 padded a lone prompt to two rows
        return x.numpy()[:rows], state.numpy()[:rows]

    def step(self, rows: Rows, n: int) -> list[str]:
        """`n` more characters for every row (each must have n left): their text, and the rows
        moved on in place."""
        text, x, state = self.graphs.extend(rows.x, rows.state, np.int32(n), rows.temperature, rows.top_k,
                                            rows.top_p, rows.seed, rows.row, rows.position)
        rows.x, rows.state = x.numpy(), state.numpy()
        rows.position = rows.position + n
        rows.left = rows.left - n
        return [t.decode("utf-8") for t in text.numpy()]

    def stream(self, prompts: list[str], settings: SamplingSettings, vocab: Vocabulary, chunk: int = CHUNK,
               max_chars: int = MAX_NUM_CHARS) -> Iterator[list[str]]:
        """The generated text in pieces of up to `chunk` characters per row (prompts excluded),
        the same text `generate_text` gives in one piece."""
        check_prompts(vocab, prompts)
        settings.check(max_chars)
        rows = Rows.of(*self.start(prompts), settings)
        while rows.left[0] > 0:
            yield self.step(rows, int(min(chunk, rows.left[0])))

    def generate_text(self, prompts: list[str], settings: SamplingSettings, vocab: Vocabulary,
                      max_chars: int = MAX_NUM_CHARS) -> list[str]:
        texts = list(prompts)
        for pieces in self.stream(prompts, settings, vocab, max_chars=max_chars):
            texts = [t + p for t, p in zip(texts, pieces)]
        return texts

    def warm_up(self, vocab: Vocabulary) -> None:
        """Trace or load the graphs now, not in the first request's time."""
        rows = Rows.of(*self.start([vocab.chars[0]]), SamplingSettings(num_chars=1))
        self.step(rows, 1)


def exported_version(graphs) -> int:
    """The signature version of a loaded SavedModel; an ExportError for one this code cannot run."""
    if not all(hasattr(graphs, name) for name in ("start", "extend", "generate")):
        raise ExportError("not a charrnn generator: the SavedModel has no start, extend and generate functions")
    version = int(graphs.signature_version()) if hasattr(graphs, "signature_version") else 1
    if version not in KNOWN_VERSIONS:
        raise ExportError(f"the generator was exported with signature version {version}; this charrnn runs "
                          f"versions {', '.join(map(str, KNOWN_VERSIONS))}: serve it with a charrnn that knows it")
    return version


def export(generator: Generator, path: str | Path) -> None:
    """Write `generator` as a SavedModel that `tf.saved_model.load(path)` runs alone."""
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
