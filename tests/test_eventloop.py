"""zipedge's own commands (worker, janitor, index) run on uvloop, as `zipedge serve` does
under uvicorn: the standard selector loop moves every socket read and write through
Python."""

from __future__ import annotations

import asyncio
import inspect

import uvloop

from service import cli, eventloop


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_run_uses_uvloop_and_returns_the_result() -> None:
    assert isinstance(eventloop.run(_running_loop()), uvloop.Loop)

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert eventloop.run(answer()) == 42


def test_the_commands_run_their_coroutines_through_it() -> None:
    source = inspect.getsource(cli)
    assert "asyncio.run(" not in source
    for command in (cli._worker, cli._janitor, cli._index):
        assert "eventloop.run(" in inspect.getsource(command), command.__name__
