"""Request bodies: JSON, size-limited before it is read into memory."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from service.constants import MAX_POST_BODY_BYTES
from service.exceptions import InvalidParameter, TooLarge


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_POST_BODY_BYTES:
        raise TooLarge(f"the request body is larger than {MAX_POST_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_POST_BODY_BYTES:
            raise TooLarge(f"the request body is larger than {MAX_POST_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # `[[[[…` a hundred thousand deep: the decoder's recursion guard, not a crash.
        raise InvalidParameter("the body's JSON is nested too deeply") from None
