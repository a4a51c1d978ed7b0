"""Reading a JSON object from a request body (the server's non-DICOM endpoints)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from dicomweb.errors import BadRequest


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object; BadRequest when it is not one."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
