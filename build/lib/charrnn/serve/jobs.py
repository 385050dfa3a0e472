"""A generation request's life in the app, whichever route it came by: handed to the batcher,
then its pieces collected into whole texts or streamed as server-sent events, and the HTTP error
it ends with when it cannot be answered."""
import asyncio
import json

from charrnn.sampling.settings import SamplingSettings
from charrnn.serve.batching import Batcher, Busy, Cancelled, Failed, Job

DISCONNECT_POLL_S = 0.5
RETRY_AFTER_S = "1"


class ApiError(Exception):
    """A request the service refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def submit(batcher: Batcher, prompts: list[str], settings: SamplingSettings, timeout: float) -> Job:
    job = Job(prompts, settings, timeout)
    try:
        batcher.submit(job)
    except Busy as e:
        raise ApiError(503, str(e), {"Retry-After": RETRY_AFTER_S}) from None
    return job


async def collect(job: Job, request) -> list[str]:
    """The job's whole texts; the job is cancelled if the client goes away first."""
    async def watch():
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)
        job.cancel()

    watcher = asyncio.create_task(watch())
    texts = list(job.prompts)
    try:
        async for pieces in job.pieces():
            for row, piece in pieces:
                texts[row] += piece
    except Failed as e:
        raise ApiError(e.status, str(e), {"Retry-After": RETRY_AFTER_S} if e.status == 503 else None) from None
    except Cancelled:
        raise ApiError(499, "cancelled: the client went away") from None  # nobody reads this answer
    finally:
        watcher.cancel()
        job.cancel()  # a no-op once done; frees the rows if we are cancelled ourselves
    return texts


async def sse_events(job: Job, summary: dict):
    from fastapi.sse import format_sse_event

    def event(data: dict, name: str | None = None) -> bytes:
        return format_sse_event(data_str=json.dumps(data, ensure_ascii=False), event=name)

    try:
        for i, prompt in enumerate(job.prompts):
            yield event({"index": i, "text": prompt})
        async for pieces in job.pieces():
            for row, piece in pieces:
                yield event({"index": row, "text": piece})
        yield event(summary, "done")
    except (Failed, Cancelled) as e:
        yield event({"error": str(e) or "cancelled"}, "error")
    finally:
        job.cancel()  # the client went away (Starlette cancels this generator), or a no-op
