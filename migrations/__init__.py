"""Alembic migrations of the lora-advisor database, applied by `advisor db upgrade`."""
