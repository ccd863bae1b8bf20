"""saq's Redis queue with a sweep that leaves a job in transit alone (see the class)."""

from __future__ import annotations

import logging
from typing import Any

from saq.job import Status
from saq.queue.redis import RedisQueue

logger = logging.getLogger(__name__)


class SweepSafeQueue(RedisQueue):
    """saq's Redis queue with a sweep that leaves a job in transit alone.

    A worker dequeues with BLMOVE (queued list -> active list) and only then marks the job
    active. saq's sweep takes any job in the active list that is not marked active for an
    abandoned one, so a sweep landing in that gap aborts and re-enqueues a job a worker is
    just starting: it runs twice, or drops out of every list and reads "running" forever.
    Here such a job is swept only when this process's previous sweep saw it too (a sweep
    interval later), so a worker that died in the gap still gets its job retried.
    The rest is saq 0.26's sweep as written.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_transit: set[bytes] = set()

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_SWEEP_SCRIPT)
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        seen_in_transit, self._in_transit = self._in_transit, set()
        swept: list[bytes] = []
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                logger.info("sweeping missing job %s", job_id)
                continue
            if job.status in (Status.NEW, Status.QUEUED) and job_id not in seen_in_transit:
                self._in_transit.add(job_id)  # dequeued, not started yet: look again next time
                continue
            if job.status == Status.ACTIVE and not job.stuck:
                continue
            logger.info("sweeping job %s (%s)", job.key, job.status)
            swept.append(job_id)
            await self.abort(job, error=self.swept_error_message)
            try:
                await job.refresh(abort)
            except TimeoutError:
                logger.info("could not abort job %s", job.key)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return [job_id.decode() for job_id in swept]


#: saq's own: take the sweep lock for `lock` seconds, then read every active job.
_SWEEP_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""
