"""The hybrid Redis + PostgreSQL job queue: worker library, mover, operator views (README "Queue")."""


def namespace_for(key_prefix: str, db_prefix: str) -> str:
    """Where a stack's queue keys live in Redis, e.g. ``queue:{pm_dev}:`` (one cluster slot per stack)."""
    return f"{key_prefix}{{{db_prefix}}}:"
