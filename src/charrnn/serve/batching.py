"""Dynamic batching: one worker thread owns the generator and merges every request that arrives
while it is busy into the rows it is generating.

A row's text depends only on its own prompt, settings, seed, row index and position
(charrnn.generation), never on the rows beside it, so requests can share batches freely and every
answer equals `Generator.generate_text` for the same request alone. Each step the worker admits
the requests that arrived meanwhile (first come, first served, while their rows fit in
max_batch), runs `start` on their prompts, then advances every row with one `extend` of
n = min(chunk, the fewest characters any row still needs) characters: nobody's text is generated
past its end, finished requests leave at once, a request arriving mid-generation waits at most
one step, and a cancelled one (its client went away) leaves at the next. batching=False admits a
request only into an empty batch (one request at a time).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading

import numpy as np

from charrnn.core.redact import format_exception, redact

MAX_BATCH = 64  # the batch-invariance of generation is tested up to 64 rows
# Characters per step: how often new requests can join and streams advance. Each extend call costs
# ~1-2 ms beyond its characters on a 2-core CPU: 100 keeps that near 10% of a lone request's time
# (bench/serve.py: a lone 500-character request took ~95 ms with 50, ~88 ms with 100), and a
# newcomer waits at most one step (~15 ms alone, ~60 ms with 64 rows).
DEFAULT_CHUNK = 100
MAX_WAITING = 1_024  # requests queued for a place in the batch before new ones are refused

log = logging.getLogger("charrnn.serve")


class Busy(Exception):
    """No place for another request: too many wait, or the worker is stopping."""


class Failed(Exception):
    """The generation of a request failed (a bug, or TensorFlow): the message is masked."""


class Cancelled(Exception):
    """The request was cancelled: its client went away."""



class Job:
    """One request: its prompts and settings, and the asyncio queue (of the event loop that
    submitted it) where the worker thread puts its events: ("text", [piece per prompt]), then
    ("done", None), ("error", message) or ("cancelled", None)."""

    def __init__(self, prompts: list[str], settings: dict):
        self.prompts = prompts
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def send(self, kind: str, payload=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody waits for this job any more
            pass

    def cancel(self) -> None:
        self.cancelled = True  # read by the worker at the next step

    async def pieces(self):
        """The text pieces as they come (one per prompt), until the job is done."""
        while True:
            kind, payload = await self.events.get()
            if kind == "done":
                return
            if kind == "error":
                raise Failed(payload)
            if kind == "cancelled":
                raise Cancelled()
            yield payload


class Batch:
    """The rows being generated: parallel arrays, one entry per row, and each row's job."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.rows: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: Job, x: np.ndarray, state: np.ndarray) -> None:
        k, s = len(job.prompts), job.settings
        new = {"x": x, "state": state, "temperature": np.full(k, s["temperature"], np.float32),
               "top_k": np.full(k, s["top_k"], np.int32), "top_p": np.full(k, s["top_p"], np.float32),
               "seed": np.full(k, s["seed"], np.int64), "row": np.arange(k, dtype=np.int64),
               "position": np.zeros(k, np.int64), "left": np.full(k, s["num_chars"], np.int64)}
        self.rows = {key: np.concatenate([self.rows[key], new[key]]) for key in new} if self.jobs else new
        self.jobs += [job] * k

    def keep(self, mask: np.ndarray) -> None:
        self.rows = {key: value[mask] for key, value in self.rows.items()}
        self.jobs = [job for job, kept in zip(self.jobs, mask) if kept]


class Batcher:
    """The worker thread that owns the model (see the module docstring)."""

    def __init__(self, engine, max_batch: int = MAX_BATCH, chunk: int = DEFAULT_CHUNK, batching: bool = True,
                 max_waiting: int = MAX_WAITING):
        self.engine, self.max_batch, self.chunk, self.batching = engine, max_batch, chunk, batching
        self.max_waiting = max_waiting
        self.batch = Batch()
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.counts = {"requests_served": 0, "requests_cancelled": 0, "chars_generated": 0, "steps": 0,
                       "max_rows": 0}

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="charrnn-batcher", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self.wake:
            if self.stopping:
                raise Busy("the server is shutting down")
            if len(self.waiting) >= self.max_waiting:
                raise Busy(f"busy: {len(self.waiting)} requests are waiting already; try again shortly")
            self.waiting.append(job)
            self.wake.notify()

    def stats(self) -> dict:
        return {"rows": len(self.batch), "waiting": len(self.waiting), **self.counts,
                "max_batch": self.max_batch, "chunk": self.chunk, "batching": self.batching}

    def _run(self) -> None:
        while True:
            with self.wake:
                while not (self.stopping or self.waiting or len(self.batch)):
                    self.wake.wait()
                if self.stopping:
                    break
                admitted = self._next_jobs()
            try:
                self._admit(admitted)
            except Exception as e:  # noqa: BLE001 - see _fail
                self._fail(admitted, e)
            try:
                self._drop_cancelled()
                if len(self.batch):
                    self._step()
            except Exception as e:  # noqa: BLE001
                self._fail(self.batch.jobs, e)
                self.batch = Batch()
        with self.wake:
            for job in dict.fromkeys([*self.batch.jobs, *self.waiting]):
                job.send("error", "the server is shutting down")
            self.waiting.clear()

    def _next_jobs(self) -> list[Job]:
        """The waiting jobs that join now, first come first served (under the lock)."""
        if not self.batching and len(self.batch):
            return []
        taken, free = [], self.max_batch - len(self.batch)
        while self.waiting and (self.batching or not taken):
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft().send("cancelled")
                self.counts["requests_cancelled"] += 1
                continue
            if self.batching and len(job.prompts) > free:
                break
            taken.append(self.waiting.popleft())
            free -= len(job.prompts)
        return taken

    def _admit(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        x, state = self.engine.start([p for job in jobs for p in job.prompts])
        x, state = x.numpy(), state.numpy()
        offset = 0
        for job in jobs:
            k = len(job.prompts)
            self.batch.add(job, x[offset:offset + k], state[offset:offset + k])
            offset += k
        self.counts["max_rows"] = max(self.counts["max_rows"], len(self.batch))

    def _drop_cancelled(self) -> None:
        cancelled = np.array([job.cancelled for job in self.batch.jobs], bool)
        if cancelled.any():
            for job in {job for job, c in zip(self.batch.jobs, cancelled) if c}:
                job.send("cancelled")
                self.counts["requests_cancelled"] += 1
            self.batch.keep(~cancelled)

    def _step(self) -> None:
        rows = self.batch.rows
        n = int(min(self.chunk, rows["left"].min()))
        text, x, state = self.engine.extend(rows["x"], rows["state"], np.int32(n), rows["temperature"], rows["top_k"],
                                            rows["top_p"], rows["seed"], rows["row"], rows["position"])
        rows["x"], rows["state"] = x.numpy(), state.numpy()
        rows["position"] += n
        rows["left"] -= n
        pieces: dict[Job, list[str]] = {}
        for job, piece in zip(self.batch.jobs, text.numpy()):
            pieces.setdefault(job, []).append(piece.decode("utf-8"))
        for job, texts in pieces.items():
            job.send("text", texts)
        finished = rows["left"] == 0
        for job in {job for job, done in zip(self.batch.jobs, finished) if done}:
            job.send("done")
            self.counts["requests_served"] += 1
        self.counts["chars_generated"] += n * len(self.batch)
        self.counts["steps"] += 1
        self.batch.keep(~finished)

    def _fail(self, jobs: list[Job], e: Exception) -> None:
        """A bug or a TensorFlow failure: these jobs get a 500, the worker goes on with the rest."""
        log.error("generation failed; %d request(s) get a 500:\n%s", len(set(jobs)), format_exception(e))
        for job in dict.fromkeys(jobs):  # each job once
            job.send("error", f"internal error: {type(e).__name__}: {redact(e)}")
