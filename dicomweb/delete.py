"""DELETE of a study, a series or an instance: index rows and files both go.

PS3.18 defines no delete; this is the extension most DICOMweb servers offer, on the
resource paths of WADO-RS. The index is changed first, in one transaction; the files
are removed after it commits, so a reader never finds an indexed instance without its
file, and a crash in between only leaves files the start-up sweep removes.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import NotFound
from dicomweb.index import Index
from dicomweb.index.deletion import DeleteTarget
from dicomweb.resources import missing, path_uids
from dicomweb.storage import BlobStore


async def delete_resource(request: Request) -> Response:
    """Remove what the path names; 200 with what was removed, 404 if nothing matches."""
    study, series, sop = path_uids(request.path_params)
    index: Index = request.app.state.index
    blobs: BlobStore = request.app.state.blobs
    deleted = await index.delete(DeleteTarget(study, series, sop))
    if deleted is None:
        raise NotFound(missing(study, series, sop))
    await blobs.delete(deleted.blob_keys)
    body = {
        "instances": deleted.instances,
        "series": deleted.series,
        "studies": deleted.studies,
        "patients": deleted.patients,
        "bytes": deleted.bytes,
    }
    return Response(orjson.dumps(body), media_type="application/json")
