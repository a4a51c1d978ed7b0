"""Blob storage: where instance files live. The index says which blobs exist."""

from dicomweb.storage.base import BlobInfo, BlobStore, StagedBlob, SweepReport
from dicomweb.storage.filesystem import FilesystemBlobStore

__all__ = ["BlobInfo", "BlobStore", "FilesystemBlobStore", "StagedBlob", "SweepReport"]
