"""The error tree. Each error knows its HTTP status and its DICOM status.

    DicomwebError
     +-- BadRequest (400)
     |    +-- InvalidUID
     +-- Unauthorized (401; auth/, with a WWW-Authenticate challenge)
     +-- Forbidden (403; auth/)
     +-- NotFound (404)
     +-- NotAcceptable (406)
     +-- RequestTimeout (408; auth/edge.py)
     +-- PayloadTooLarge (413)
     +-- URITooLong (414; auth/edge.py)
     +-- UnsupportedMediaType (415)
     +-- RangeNotSatisfiable (416)
     +-- HeaderFieldsTooLarge (431; auth/edge.py)
     +-- ServiceUnavailable (503)
     +-- InstanceRejected (per instance; STOW-RS FailedSOPSequence, C-STORE status)

Only these become 4xx responses; any other exception is a bug and a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dicomweb.status import MEANINGS, Status


class DicomwebError(Exception):
    """Base of every error the server reports to a client on purpose."""

    http_status: int = 400
    dicom_status: Status = Status.PROCESSING_FAILURE
    title: str = "Bad Request"
    # Response headers the status needs (416 says the size in Content-Range).
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(DicomwebError):
    http_status = 400
    dicom_status = Status.CANNOT_UNDERSTAND
    title = "Bad Request"


class InvalidUID(BadRequest):
    dicom_status = Status.INVALID_UID
    title = "Invalid UID"


class Unauthorized(DicomwebError):
    """No usable credential (RFC 6750 3.1): the challenge says what to send."""

    http_status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(DicomwebError):
    """A credential that does not cover the request (RFC 6750 insufficient_scope)."""

    http_status = 403
    title = "Forbidden"

    def __init__(self, detail: str, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": challenge} if challenge else {}


class RequestTimeout(DicomwebError):
    http_status = 408
    title = "Request Timeout"


class URITooLong(DicomwebError):
    http_status = 414
    title = "URI Too Long"


class HeaderFieldsTooLarge(DicomwebError):
    http_status = 431
    title = "Request Header Fields Too Large"


class NotFound(DicomwebError):
    http_status = 404
    title = "Not Found"


class NotAcceptable(DicomwebError):
    http_status = 406
    title = "Not Acceptable"


class PayloadTooLarge(DicomwebError):
    http_status = 413
    dicom_status = Status.OUT_OF_RESOURCES_REQUEST_TOO_LARGE
    title = "Payload Too Large"


class UnsupportedMediaType(DicomwebError):
    http_status = 415
    title = "Unsupported Media Type"


class RangeNotSatisfiable(DicomwebError):
    """No byte of the requested Range lies within the representation."""

    http_status = 416
    title = "Range Not Satisfiable"

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.headers = {"Content-Range": f"bytes */{size}"}


class ServiceUnavailable(DicomwebError):
    http_status = 503
    dicom_status = Status.OUT_OF_RESOURCES
    title = "Service Unavailable"


class InstanceRejected(DicomwebError):
    """One instance could not be stored; the request as a whole goes on."""

    http_status = 409
    title = "Instance Rejected"

    def __init__(
        self,
        status: Status,
        detail: str = "",
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(detail or MEANINGS[status])
        self.dicom_status = status
        # The instance it is about, as far as it was read.
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
