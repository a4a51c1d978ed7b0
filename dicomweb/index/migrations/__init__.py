"""Alembic migrations of the index schema, applied at start-up."""
