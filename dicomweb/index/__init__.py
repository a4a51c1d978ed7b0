"""The index: what is stored, queryable without opening files (SQLite or PostgreSQL)."""

from dicomweb.index.records import AddResult, InstanceRecord
from dicomweb.index.repository import Index

__all__ = ["AddResult", "Index", "InstanceRecord"]
