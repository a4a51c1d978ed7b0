"""The DIMSE bridge: Verification, Storage and Query/Retrieve over classic DICOM networking."""

from dicomweb.dimse.listener import dimse_listener

__all__ = ["dimse_listener"]
