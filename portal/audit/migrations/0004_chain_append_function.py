"""On PostgreSQL, `audit_chain_next`: the chain step of an append, run by the database.

`audit_record` calls it inside the INSERT of the new event, so the lock, the head read, the
hash and the insert take one round trip. It takes the chain lock (a transaction-scoped
advisory lock; the key is `portal.audit.services.CHAIN_LOCK_KEY`), reads the head with a
snapshot taken after the lock (a VOLATILE function takes one per statement), and returns
the new event's id, its prev_hash and its hash: SHA-256 over the canonical form that the
caller sent cut in three around those two values (`portal.audit.hashing.canonical_parts`).
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION audit_chain_next(
    prefix text, middle text, suffix text,
    OUT new_id bigint, OUT new_prev_hash text, OUT new_hash text
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7237112439456756324);
    SELECT e.id, e.hash INTO new_id, new_prev_hash
        FROM audit_auditevent AS e ORDER BY e.id DESC LIMIT 1;
    IF NOT FOUND THEN
        new_id := 0;
        new_prev_hash := repeat('0', 64);
    END IF;
    new_id := new_id + 1;
    new_hash := encode(sha256(convert_to(prefix || new_id || middle || new_prev_hash || suffix, 'UTF8')), 'hex');
END;
$$;
"""

DROP = "DROP FUNCTION IF EXISTS audit_chain_next(text, text, text);"


def _on_postgresql(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_filter_indexes")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False)]
