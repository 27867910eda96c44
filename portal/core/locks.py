"""Locks that hold across processes and machines: only one of several beat-run passes at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import cache
from django.db import connection


@contextmanager
def exclusive(name: str, *, ttl_s: float) -> Iterator[bool]:
    """Yields True in the one process that got the lock, False in any other at the same time.

    PostgreSQL: a session advisory lock (released at the end, or when the process dies).
    Elsewhere: a cache key that expires after `ttl_s` in case the holder dies.
    """
    if connection.vendor == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            got = cursor.fetchone()[0]
        try:
            yield got
        finally:
            if got:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    got = cache.add(f"lock:{name}", 1, timeout=ttl_s)
    try:
        yield got
    finally:
        if got:
            cache.delete(f"lock:{name}")
