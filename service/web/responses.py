"""`ArchiveResponse`: a ZIP streamed with an exact Content-Length, cut off honestly.

Pure ASGI (no BaseHTTPMiddleware re-wrapping). The body is an async iterator, so each
chunk goes out without a thread hop. A client disconnect cancels the body at once, and
the body's own cleanup (cancelling fetches) runs shielded. If the body fails after the
headers went out, the response is left incomplete on purpose: the server then closes
the connection and the client sees fewer bytes than Content-Length, i.e. a failed
download, never a complete-looking archive with a hole.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service.exceptions import ZipedgeError
from service.metrics import STREAM_BYTES, STREAM_OUTCOMES, STREAMS_ACTIVE
from service.sources.base import closing

logger = logging.getLogger(__name__)


class ArchiveResponse(Response):
    def __init__(
        self,
        body: Callable[[], AsyncIterator[bytes]],
        *,
        headers: Mapping[str, str],
        status_code: int = 200,
    ) -> None:
        self._body = body  # a factory: HEAD must not start any fetch
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)
        #: how the response ended: "complete", "disconnected" or "aborted" (for tests/metrics)
        self.outcome = ""
        self.bytes_sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        if scope.get("method") == "HEAD":
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.outcome = "complete"
            return

        STREAMS_ACTIVE.inc()
        try:
            await self._serve(start, receive, send)
        finally:
            STREAMS_ACTIVE.dec()
            STREAM_BYTES.inc(self.bytes_sent)
            STREAM_OUTCOMES.labels(self.outcome or "disconnected").inc()

    async def _serve(self, start: Message, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                try:
                    await self._stream(start, send)
                finally:
                    group.cancel_scope.cancel()

            group.start_soon(stream)
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not self.outcome:
                        self.outcome = "disconnected"
                        logger.info("client left after %d bytes", self.bytes_sent)
                    group.cancel_scope.cancel()
                    break

    async def _stream(self, start: Message, send: Send) -> None:
        await send(start)
        try:
            async with closing(self._body()) as body:
                async for chunk in body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    self.bytes_sent += len(chunk)
        except ZipedgeError as exc:
            # Returning without the final body message makes the server close the
            # connection: the transfer is visibly incomplete.
            self.outcome = "aborted"
            logger.warning("stream aborted after %d bytes: %s", self.bytes_sent, exc.message)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.outcome = "complete"
