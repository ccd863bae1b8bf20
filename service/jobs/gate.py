"""Cancel or commit, never both: the one decision a job's cache object waits on.

A job's build may be cancelled until the moment it commits its cache object, and not
after. Both sides claim the job's gate atomically: the build claims it just before
`CompleteMultipartUpload` (`claim_commit`), a cancel claims it first (`cancel`). Whoever
claims it first wins: a cancelled job never commits (its upload is aborted), and a cancel
that arrives during or after the commit answers that the job is ready, instead of reading
`cancelled` over a committed object. In Redis (one Lua call each, so every worker and
service process agree) or in process for the embedded default.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import JOB_CANCEL_POLL_S, JOB_CANCEL_WAIT_S, JOB_GATE_COMMITTING_TTL_S, JOB_TTL_S
from service.exceptions import DependencyUnavailable


class Gate(enum.Enum):
    #: nothing decided: the build may still be cancelled
    OPEN = "open"
    #: the build is committing: a cancel waits for the outcome
    COMMITTING = "committing"
    #: the cache object is committed: the job is ready
    COMMITTED = "committed"
    #: cancelled: the build will not commit
    CANCELLED = "cancelled"


class CommitGate(Protocol):
    async def claim_commit(self, job_id: str) -> Gate:
        """Claim the commit: COMMITTING when this build may commit, CANCELLED when the job
        was cancelled first, COMMITTED when an earlier attempt of it committed already (a
        retry of an attempt the sweep gave up on while it was committing)."""
        ...

    async def committed(self, job_id: str) -> None: ...

    async def reopen(self, job_id: str) -> None:
        """The commit failed (nothing published): a retry may claim it again."""
        ...

    async def cancel(self, job_id: str) -> Gate:
        """Claim the cancel: CANCELLED when it won, else what the build got to first."""
        ...

    async def state(self, job_id: str) -> Gate: ...

    async def forget(self, job_id: str) -> None:
        """A new job of this id: nothing is decided for it yet."""
        ...


class LocalCommitGate:
    def __init__(self) -> None:
        self._states: dict[str, Gate] = {}

    async def claim_commit(self, job_id: str) -> Gate:
        state = self._states.get(job_id, Gate.OPEN)
        if state in (Gate.CANCELLED, Gate.COMMITTED):
            return state
        self._states[job_id] = Gate.COMMITTING
        return Gate.COMMITTING

    async def committed(self, job_id: str) -> None:
        self._states[job_id] = Gate.COMMITTED

    async def reopen(self, job_id: str) -> None:
        if self._states.get(job_id) is Gate.COMMITTING:
            del self._states[job_id]

    async def cancel(self, job_id: str) -> Gate:
        state = self._states.get(job_id, Gate.OPEN)
        if state is Gate.OPEN:
            self._states[job_id] = state = Gate.CANCELLED
        return state

    async def state(self, job_id: str) -> Gate:
        return self._states.get(job_id, Gate.OPEN)

    async def forget(self, job_id: str) -> None:
        self._states.pop(job_id, None)


#: KEYS[1] the gate, ARGV[1] the value wanted, ARGV[2] its TTL (s). Sets it when the gate is
#: open (no key) and returns what the gate holds afterwards; a build may also re-claim a
#: commit it holds already (a retry after its commit failed without reopening).
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if not held or (ARGV[1] == 'committing' and held == 'committing') then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
    return ARGV[1]
end
return held
"""

KEY_PREFIX = "zipedge:jobs:gate:"


class RedisCommitGate:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)

    async def _call(self, job_id: str, wanted: Gate, ttl_s: int) -> Gate:
        try:
            held = await self._claim(keys=[KEY_PREFIX + job_id], args=[wanted.value, ttl_s])
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"job gate: {exc}") from exc
        return Gate(held.decode() if isinstance(held, bytes) else str(held))

    async def claim_commit(self, job_id: str) -> Gate:
        return await self._call(job_id, Gate.COMMITTING, JOB_GATE_COMMITTING_TTL_S)

    async def committed(self, job_id: str) -> None:
        try:
            await self._redis.set(KEY_PREFIX + job_id, Gate.COMMITTED.value, ex=JOB_TTL_S)
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"job gate: {exc}") from exc

    async def reopen(self, job_id: str) -> None:
        try:
            held = await self._redis.get(KEY_PREFIX + job_id)
            if held in (Gate.COMMITTING.value.encode(), Gate.COMMITTING.value):
                await self._redis.delete(KEY_PREFIX + job_id)
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"job gate: {exc}") from exc

    async def cancel(self, job_id: str) -> Gate:
        return await self._call(job_id, Gate.CANCELLED, JOB_TTL_S)

    async def forget(self, job_id: str) -> None:
        try:
            await self._redis.delete(KEY_PREFIX + job_id)
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"job gate: {exc}") from exc

    async def state(self, job_id: str) -> Gate:
        try:
            held = await self._redis.get(KEY_PREFIX + job_id)
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"job gate: {exc}") from exc
        if held is None:
            return Gate.OPEN
        return Gate(held.decode() if isinstance(held, bytes) else str(held))


async def settled_state(gate: CommitGate, job_id: str, *, timeout_s: float, poll_s: float) -> Gate:
    """The gate once a commit under way has ended (COMMITTED, or OPEN again if it failed)."""
    async with asyncio.timeout(timeout_s):
        # Polled: the commit may be another process's (a worker), whose end is only in Redis.
        while (state := await gate.state(job_id)) is Gate.COMMITTING:  # noqa: ASYNC110
            await asyncio.sleep(poll_s)
    return state


async def cancel_wins(gate: CommitGate, job_id: str) -> bool:
    """Claim the cancel of job `job_id`: True when it won (the build will not commit),
    False when the archive was committed first. A commit under way is waited for; if it
    failed (nothing published), the cancel tries again and wins."""
    state = await gate.cancel(job_id)
    if state is Gate.COMMITTING:
        state = await settled_state(gate, job_id, timeout_s=JOB_CANCEL_WAIT_S, poll_s=JOB_CANCEL_POLL_S)
        if state is Gate.OPEN:
            state = await gate.cancel(job_id)
    return state is not Gate.COMMITTED
