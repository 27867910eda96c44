"""A job's log as one text stream: each attempt's kept log, then the running attempt live.

With follow, the stream stays open until the job ends, across retries. It is an async
iterator so that under ASGI nothing is buffered and no worker thread is held while waiting;
engine reads (blocking) run in a thread, one line at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async

from jobs.models import Job, JobAttempt, JobState
from portal.runtime import RuntimeError_, get_backend

# How often a followed job that is not running yet (queued, starting) is looked at again.
POLL_S = 0.25
# A followed log holds a thread while it waits for the next line: its own pool, so that many
# open log views never starve the threads the rest of the portal uses.
_followers = ThreadPoolExecutor(max_workers=256, thread_name_prefix="job-log")


def _snapshot(job_id) -> tuple[dict | None, dict[int, dict]]:
    job = Job.objects.filter(pk=job_id).values("state", "attempt").first()
    attempts = JobAttempt.objects.filter(job_id=job_id).values("number", "finished_at")
    return job, {a["number"]: a for a in attempts}


def _stored(job_id, number: int) -> str:
    attempt = JobAttempt.objects.filter(job_id=job_id, number=number).values("log", "log_truncated").first()
    if attempt is None:
        return ""
    prefix = "[earlier output not kept: the log was longer than the limit]\n" if attempt["log_truncated"] else ""
    return prefix + attempt["log"]


def _header(number: int) -> bytes:
    return f"--- attempt {number} ---\n".encode() if number > 1 else b""


async def job_log_stream(*, job_id, follow: bool) -> AsyncIterator[bytes]:
    snapshot = sync_to_async(_snapshot)
    number = 1
    while True:
        job, attempts = await snapshot(job_id)
        if job is None:
            return
        attempt = attempts.get(number)
        if attempt is not None and attempt["finished_at"] is not None:
            text = await sync_to_async(_stored)(job_id, number)
            yield _header(number) + (text + "\n" if text and not text.endswith("\n") else text).encode()
            number += 1
            continue
        if attempt is not None and job["state"] == JobState.RUNNING and job["attempt"] == number:
            streamed = False
            async for line in _live(job_id, follow=follow):
                if not streamed:
                    yield _header(number)
                    streamed = True
                yield line
            if not follow:
                return
            if streamed:  # the kept log repeats what was just sent: go on to the next attempt
                await _until_finished(job_id, number)
                number += 1
                continue
        if not follow or job["state"] in JobState.final():
            return
        await asyncio.sleep(POLL_S)


async def _live(job_id, *, follow: bool) -> AsyncIterator[bytes]:
    backend = get_backend()
    try:
        loop = asyncio.get_running_loop()
        lines = iter(backend.logs(backend.handle_for(str(job_id)), follow=follow))  # a generator: nothing runs yet
        while (line := await loop.run_in_executor(_followers, next, lines, None)) is not None:
            yield (line + "\n").encode()
    except RuntimeError_:
        return  # the container is already gone: its kept log follows


async def _until_finished(job_id, number: int) -> None:
    while True:
        job, attempts = await sync_to_async(_snapshot)(job_id)
        attempt = attempts.get(number)
        if job is None or attempt is None or attempt["finished_at"] is not None:
            return
        if job["state"] in JobState.final() and job["attempt"] == number:
            return
        await asyncio.sleep(POLL_S)
