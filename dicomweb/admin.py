"""Administration endpoints: what the server holds."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.index import Index


async def get_stats(request: Request) -> Response:
    """Counts and bytes in all, per modality and per day of receipt (see index/stats.py)."""
    index: Index = request.app.state.index
    stats = await index.stats()
    return Response(orjson.dumps(stats.to_json()), media_type="application/json")
