"""Dynamic batching: one worker thread owns the generator and merges the rows of every request in
progress into the batch it generates, sharing the batch fairly among them.

A row's text depends only on its own prompt, settings, seed, row index and position
(charrnn.sampling.generation), never on the rows beside it, so any subset of the rows in progress
can be advanced together and every answer equals the same request generated alone. Each step the
worker
1. starts the requests that arrived meanwhile (their prompts run through the model together),
2. ends those that were cancelled (their client went away) or passed their deadline,
3. picks at most max_batch rows: the small requests' alone, in a batch of their own (newcomers,
   for their first step: their first characters at once; and, while more rows are in progress
   than a batch holds, requests that one step of their own finishes); else the requests that
   have received the least service first (fewest characters generated so far), each at most its
   fair share of the batch while others wait, the rest of the batch filled in the same order,
4. advances them by n = min(chunk, the fewest characters a picked row still needs) characters.
   While more rows are in progress than a batch holds, a step is bounded by the row-characters
   of a full batch advancing an eighth of the chunk, so that a newcomer waits less for the step
   in flight: a full batch advances an eighth of the chunk, a small one up to the whole chunk.
So a short request arriving while long ones stream waits for the step in flight, then is served
in a step or two of its own, and no request can hold the batch: with twelve requests of 64 rows,
each advances a part of its rows in turn. A failure inside a step is retried request by
request, so that only the request that causes it fails and the others go on. batching=False
admits one request at a time, alone.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid

import numpy as np

from charrnn.core.redact import format_exception
from charrnn.sampling.generation import Rows
from charrnn.sampling.settings import SamplingSettings
from charrnn.serve.options import DEFAULT_CHUNK, MAX_BATCH

MAX_WAITING = 1_024  # requests in progress or waiting before new ones are refused

log = logging.getLogger("charrnn.serve")


class Busy(Exception):
    """No place for another request: too many are in progress, or the worker is stopping."""


class Failed(Exception):
    """The generation of a request failed: `status` is the HTTP status it ends with (500 for a
    bug, with an id to find it in the log; 504 past its deadline), the message is masked."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """The request was cancelled: its client went away."""


def internal_error(what: str, e: BaseException) -> str:
    """Log a failure with its traceback under a fresh id; the one line a client gets."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s [error id %s]:\n%s", what, error_id, format_exception(e))
    return f"internal error (id {error_id}: the server's log has the details)"


class Job:
    """One request: its prompts and settings, its rows once started, and the asyncio queue (of the
    event loop that submitted it) where the worker thread puts its events: ("text", [(row,
    piece), ...]), then ("done", None), ("error", Failed) or ("cancelled", None)."""

    def __init__(self, prompts: list[str], settings: SamplingSettings, timeout: float | None = None):
        self.prompts = prompts
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.rows: Rows | None = None  # set by the worker when the job starts
        self.served_chars = 0  # characters generated for it so far (all rows): its service

    def send(self, kind: str, payload=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody waits for this job any more
            pass

    def cancel(self) -> None:
        self.cancelled = True  # read by the worker at the next step

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    async def pieces(self):
        """(row, piece) pairs as they come, a list per step, until the job is done."""
        while True:
            kind, payload = await self.events.get()
            if kind == "done":
                return
            if kind == "error":
                raise payload
            if kind == "cancelled":
                raise Cancelled()
            yield payload


def rows_in_progress(jobs: list[Job]) -> int:
    """Rows of these jobs with characters still to generate (a job not started yet has none)."""
    return sum(int((job.rows.left > 0).sum()) for job in jobs if job.rows is not None)


class Batcher:
    """The worker thread that owns the model (see the module docstring)."""

    def __init__(self, engine, max_batch: int = MAX_BATCH, chunk: int = DEFAULT_CHUNK, batching: bool = True,
                 max_waiting: int = MAX_WAITING):
        self.engine, self.max_batch, self.chunk, self.batching = engine, max_batch, chunk, batching
        self.max_waiting = max_waiting
        self.active: list[Job] = []  # started, rows in progress
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.counts = {"requests_served": 0, "requests_cancelled": 0, "requests_timed_out": 0,
                       "requests_failed": 0, "requests_refused": 0, "chars_generated": 0, "steps": 0,
                       "max_rows": 0}
        self.last_rows = 0  # rows of the last step

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
                self.counts["requests_refused"] += 1
                raise Busy("the server is shutting down")
            if len(self.waiting) + len(self.active) >= self.max_waiting:
                self.counts["requests_refused"] += 1
                raise Busy(f"busy: {len(self.waiting) + len(self.active)} requests are in progress already; "
                           "try again shortly")
            self.waiting.append(job)
            self.wake.notify()

    def stats(self) -> dict:
        """rows: rows of the requests in progress; batch_rows: those advanced in the last step."""
        active = list(self.active)
        return {"rows": rows_in_progress(active),
                "batch_rows": self.last_rows, "active": len(active), "waiting": len(self.waiting), **self.counts,
                "max_batch": self.max_batch, "chunk": self.chunk, "batching": self.batching}

    # --- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.wake:
                while not (self.stopping or self.waiting or self.active):
                    self.wake.wait()
                if self.stopping:
                    break
                admitted = self._take_waiting()
            try:
                self._start_jobs(admitted)
                self._end_cancelled_and_expired()
                if self.active:
                    self._step()
                if not self.active:
                    self.last_rows = 0
            except Exception as e:  # noqa: BLE001 - a bug of this loop: every job in progress fails, the worker goes on
                failed = Failed(internal_error("the batching worker failed", e))
                for job in self.active:
                    self._end(job, "error", failed, "requests_failed")
                self.active = []
        with self.wake:
            for job in dict.fromkeys([*self.active, *self.waiting]):
                job.send("error", Failed("the server is shutting down", 503))
            self.waiting.clear()
            self.active = []

    def _take_waiting(self) -> list[Job]:
        """The waiting jobs that start now (under the lock): all of them, or with batching off one
        when nothing is in progress."""
        if not self.batching:
            return [self.waiting.popleft()] if self.waiting and not self.active else []
        taken = list(self.waiting)
        self.waiting.clear()
        return taken

    def _start_jobs(self, jobs: list[Job]) -> None:
        """Run the new jobs' prompts through the model, together; when that fails, job by job."""
        jobs = [job for job in jobs if not self._gone(job)]
        if not jobs:
            return
        try:
            started = self._start_together(jobs)
        except Exception as e:  # noqa: BLE001 - find the job that causes it
            log.warning("starting %d request(s) together failed; starting them one by one:\n%s", len(jobs),
                        format_exception(e))
            started = []
            for job in jobs:
                try:
                    started += self._start_together([job])
                except Exception as e:  # noqa: BLE001
                    self._end(job, "error", Failed(internal_error("starting a request failed", e)),
                              "requests_failed")
        self.active += started

    def _start_together(self, jobs: list[Job]) -> list[Job]:
        x, state = self.engine.start([p for job in jobs for p in job.prompts])
        offset = 0
        for job in jobs:
            k = len(job.prompts)
            job.rows = Rows.of(x[offset:offset + k], state[offset:offset + k], job.settings)
            offset += k
        return jobs

    def _gone(self, job: Job) -> bool:
        """End a job that was cancelled or is past its deadline; whether it was."""
        if job.cancelled:
            self._end(job, "cancelled", None, "requests_cancelled")
            return True
        if job.expired(time.monotonic()):
            self._end(job, "error", Failed(f"the request took longer than the server's --request-timeout "
                                           f"({job.timeout:g} s)", 504), "requests_timed_out")
            return True
        return False

    def _end_cancelled_and_expired(self) -> None:
        self.active = [job for job in self.active if not self._gone(job)]

    def _end(self, job: Job, kind: str, payload, count: str) -> None:
        job.send(kind, payload)
        self.counts[count] += 1

    def _pick(self, crowded: bool) -> list[tuple[Job, np.ndarray]]:
        """(job, indices of its rows) to advance this step: least served first, each job at most
        its fair share of max_batch while others wait, then the rest of the batch filled in the
        same order (see the module docstring)."""
        order = sorted(self.active, key=lambda job: job.served_chars)  # stable: ties go by arrival
        small = [job for job in order if job.served_chars == 0 or (crowded and self._finishes_alone(job))]
        if small and len(small) < len(order):
            order = small  # a batch of their own
        pending = {id(job): np.flatnonzero(job.rows.left > 0) for job in order}
        share = max(1, self.max_batch // len(order))
        picked: dict[int, list[int]] = {id(job): [] for job in order}
        free = self.max_batch
        for cap in (share, self.max_batch):  # the fair shares, then whatever room is left
            for job in order:
                rows = pending[id(job)][len(picked[id(job)]):]
                take = rows[:max(0, min(cap - len(picked[id(job)]), free))]
                picked[id(job)] += take.tolist()
                free -= len(take)
        return [(job, np.array(picked[id(job)], np.int64)) for job in order if picked[id(job)]]

    def _step(self) -> None:
        crowded = rows_in_progress(self.active) > self.max_batch  # some rows wait while others advance
        picked = self._pick(crowded)
        chunk = self.chunk
        if crowded:
            chunk = min(chunk, max(1, self._step_budget() // sum(len(idx) for _, idx in picked)))
        n = int(min(chunk, *(job.rows.left[idx].min() for job, idx in picked)))
        try:
            texts = self._advance(picked, n)
        except Exception as e:  # noqa: BLE001 - retry request by request: only the one that causes it fails
            log.warning("a batched step of %d request(s) failed; retrying them one by one:\n%s", len(picked),
                        format_exception(e))
            texts = {}
            for job, idx in picked:
                try:
                    texts.update(self._advance([(job, idx)], n))
                except Exception as e:  # noqa: BLE001
                    self._end(job, "error", Failed(internal_error("generating a request failed", e)),
                              "requests_failed")
        rows = sum(len(idx) for job, idx in picked if id(job) in texts)
        for job, idx in picked:
            if id(job) in texts:
                job.send("text", list(zip(idx.tolist(), texts[id(job)])))
                job.served_chars += n * len(idx)
        self.counts["chars_generated"] += n * rows
        self.counts["steps"] += 1
        self.counts["max_rows"] = max(self.counts["max_rows"], rows)
        self.last_rows = rows
        still = []
        for job in self.active:
            if id(job) in texts and not (job.rows.left > 0).any():
                self._end(job, "done", None, "requests_served")
            elif id(job) in texts or all(j is not job for j, _ in picked):
                still.append(job)  # a job whose step failed has been ended
        self.active = still

    def _step_budget(self) -> int:
        """Row-characters of one step while crowded: a full batch advancing an eighth of the chunk
        (bench/serve.py: a quarter kept a short request waiting 2.6-3.3x its idle time, an eighth 2.0-2.6x)."""
        return self.max_batch * max(1, self.chunk // 8)

    def _finishes_alone(self, job: Job) -> bool:
        left = job.rows.left[job.rows.left > 0]
        return left.size > 0 and int(left.max()) <= self.chunk and int(left.sum()) <= self._step_budget()

    def _advance(self, picked: list[tuple[Job, np.ndarray]], n: int) -> dict[int, list[str]]:
        """Advance these rows of these jobs by n characters together: {id(job): texts of its rows}."""
        batch = picked[0][0].rows.select(picked[0][1])
        for job, idx in picked[1:]:
            batch = batch.concat(job.rows.select(idx))
        texts = self.engine.step(batch, n)
        out, offset = {}, 0
        for job, idx in picked:
            k = len(idx)
            moved = batch.select(slice(offset, offset + k))
            for name, values in moved.arrays().items():
                getattr(job.rows, name)[idx] = values
            out[id(job)] = texts[offset:offset + k]
            offset += k
        return out
