"""The sweep of `SweepSafeQueue` against a real redis-server: a job a worker has dequeued
but not yet marked active is not taken for an abandoned one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from saq import Job
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from service.jobs.saq_queue import SweepSafeQueue
from service.stack.redis import RedisServer

pytestmark = pytest.mark.integration

#: ours, and saq's stock queue on the same Redis keys
Queues = tuple[SweepSafeQueue, RedisQueue]


@pytest.fixture
async def queues(redis_server: RedisServer) -> AsyncIterator[Queues]:
    name = f"sweep-{uuid.uuid4().hex[:8]}"  # a queue of its own on the shared server
    ours = SweepSafeQueue.from_url(redis_server.url, name=name)
    stock = RedisQueue.from_url(redis_server.url, name=name)
    await ours.connect()
    await stock.connect()
    yield ours, stock
    await ours.disconnect()
    await stock.disconnect()


async def sweep(queue: RedisQueue) -> list[str]:
    # Each sweep takes a lock for `lock` seconds; drop it so the test can sweep again now.
    await queue.redis.delete(queue.namespace("sweep"))
    return await queue.sweep(lock=60, abort=0.1)


async def dequeued(queue: RedisQueue) -> Job:
    """A job moved into the active list, as a worker's BLMOVE does, not yet started."""
    await queue.enqueue(Job(function="build_archive", key=uuid.uuid4().hex, retries=3))
    job = await queue.dequeue(timeout=1)
    assert job is not None and job.status is Status.QUEUED
    return job


async def test_stock_saq_sweeps_a_job_a_worker_is_starting(queues: Queues) -> None:
    """The race being fixed, shown on saq's own queue."""
    _, stock = queues
    job = await dequeued(stock)
    assert await sweep(stock) == [job.id]


async def test_a_job_in_transit_is_left_to_its_worker(queues: Queues) -> None:
    queue, _ = queues
    job = await dequeued(queue)
    assert await sweep(queue) == []
    # The worker marks it active, as saq's Worker.process does; it is left alone after too.
    job.started = now()
    job.attempts += 1
    await job.update(status=Status.ACTIVE)
    assert await sweep(queue) == []
    stored = await queue.job(job.key)
    assert stored is not None and stored.status is Status.ACTIVE
    assert await queue.count("active") == 1 and await queue.count("queued") == 0


async def test_a_job_whose_worker_died_before_starting_it_is_retried(
    queues: Queues,
) -> None:
    queue, _ = queues
    job = await dequeued(queue)
    assert await sweep(queue) == []
    assert await sweep(queue) == [job.id]  # still not started a sweep later: abandoned
    stored = await queue.job(job.key)
    assert stored is not None and stored.status is Status.QUEUED
    assert await queue.count("queued") == 1 and await queue.count("active") == 0


async def test_a_stuck_active_job_and_a_missing_one_are_swept(queues: Queues) -> None:
    queue, _ = queues
    job = await dequeued(queue)
    job.status, job.heartbeat = Status.ACTIVE, 1
    job.started = job.touched = now() - 10_000  # no heartbeat for 10 s
    await queue.redis.set(job.id, queue.serialize(job))  # update() would touch it
    await queue.redis.rpush(queue.namespace("active"), queue.job_id("gone"))
    swept = await sweep(queue)
    assert sorted(swept) == sorted([job.id, queue.job_id("gone")])
    assert await queue.count("queued") == 1 and await queue.count("active") == 0
