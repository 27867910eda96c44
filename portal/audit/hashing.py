"""What an event's hash covers: its canonical form, defined once for the appender and verifier."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

GENESIS_HASH = "0" * 64  # the prev_hash of event #1

# The fields an event's hash covers (every field but `hash`), in the order the verifier
# reads them from the table.
HASHED_FIELDS = (
    "id",
    "created_at",
    "actor_type",
    "actor_id",
    "actor_name",
    "token_name",
    "ip",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "team_id",
    "team_slug",
    "outcome",
    "details",
    "prev_hash",
)
# The two fields only the chain knows, filled in under the chain lock (see `canonical_parts`).
CHAIN_FIELDS = ("id", "prev_hash")

# The timestamp format of the canonical form, and the same for PostgreSQL's to_char.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
PG_ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

# Canonical JSON: keys sorted at every depth, no spaces, UTF-8 as is.
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical_bytes(values: tuple) -> bytes:
    """The canonical form of one event, given as a tuple of HASHED_FIELDS values.

    `created_at` may be a datetime or already in ISO_FORMAT (as the verifier reads it).
    """
    fields = dict(zip(HASHED_FIELDS, values, strict=True))
    if not isinstance(fields["created_at"], str):
        fields["created_at"] = iso(fields["created_at"])
    return _canonical_json(fields).encode()


def values_hash(values: tuple) -> str:
    return hashlib.sha256(canonical_bytes(values)).hexdigest()


def canonical_parts(fields: dict) -> tuple[str, str, str]:
    """The canonical form cut around the chain fields: `prefix + id + middle + prev_hash + suffix`.

    `fields` holds every hashed field but `id` and `prev_hash`. With keys sorted, `"id"`
    falls between `"details"` and `"ip"` and `"prev_hash"` between `"outcome"` and
    `"target_id"`, so each part is the compact JSON of a contiguous run of keys; joined with
    the two values they equal `canonical_bytes` exactly (a test holds them to it). This lets
    PostgreSQL hash the event in the same statement that assigns its place in the chain.
    """
    fields = {**fields, "created_at": iso(fields["created_at"])}
    runs: list[dict] = [{}, {}, {}]
    for name in sorted(fields):
        runs[sum(name > chain_field for chain_field in CHAIN_FIELDS)][name] = fields[name]
    before, between, after = (_canonical_json(run)[1:-1] for run in runs)
    return "{" + before + ',"id":', "," + between + ',"prev_hash":"', '",' + after + "}"


def iso(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.strftime(ISO_FORMAT)
