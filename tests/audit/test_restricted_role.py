"""The portal under a database role that may only insert and read audit events (docs/audit.md)."""

from __future__ import annotations

import re
import secrets

import psycopg
import pytest
from django.db import connection

from portal.audit.models import AuditEvent
from tests.audit.conftest import portal_env_on_test_db
from tests.factories import PASSWORD
from tests.processes import REPO, manage

pytestmark = pytest.mark.django_db(transaction=True)

# Audited actions through the real stack, run by the portal as the restricted role.
ACTIONS = f"""
from django.test import Client
from portal.accounts import services
from portal.accounts.models import Team, User
from portal.audit.services import Actor
client = Client(SERVER_NAME="localhost")
assert client.post("/accounts/login/", {{"username": "alice", "password": "{PASSWORD}"}}).status_code == 302
assert client.post("/settings/tokens/", {{"name": "ci", "lifetime": "30"}}).status_code == 200
assert client.post("/teams/demo/members/", {{"username": "dave", "role": "member"}}).status_code == 302
assert client.post("/accounts/logout/").status_code == 302
services.team_create(slug="ops", name="Ops", actor=Actor.system())
print("actions done")
"""


def documented_sql(*, role: str, password: str) -> str:
    """The insert-only role set-up exactly as docs/audit.md shows it, for this database."""
    docs = (REPO / "docs" / "audit.md").read_text()
    block = re.search(r"```sql\n(.*?)```", docs, re.DOTALL).group(1)
    owner = connection.settings_dict["USER"]
    return (
        block.replace("dockyard_app", role)
        .replace("'change-me'", f"'{password}'")
        .replace("DATABASE dockyard ", f'DATABASE "{connection.settings_dict["NAME"]}" ')
        .replace("dockyard_owner", owner)
    )


@pytest.fixture
def restricted_role():
    role = f"{connection.settings_dict['NAME']}_app"  # roles are per server: one per test database
    password = secrets.token_urlsafe(16)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}" if _role_exists(cursor, role) else "SELECT 1")
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(documented_sql(role=role, password=password))
    yield role, password
    with connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


def _role_exists(cursor, role: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    return cursor.fetchone() is not None


def test_the_portal_works_as_a_role_that_cannot_change_events(restricted_role, alice, dave, tmp_path):
    role, password = restricted_role
    env = portal_env_on_test_db(user=role, password=password)
    env["DOCKYARD_AUDIT_CHECKPOINT_FILE"] = str(tmp_path / "checkpoints.jsonl")

    acted = manage("shell", "-c", ACTIONS, env=env)
    assert acted.returncode == 0, acted.stderr
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor_name"))
    assert actions == [
        ("auth.login", "alice"),
        ("token.create", "alice"),
        ("team.member_add", "alice"),
        ("auth.logout", "alice"),
        ("team.create", "system"),
    ]
    assert manage("audit_checkpoint", env=env).returncode == 0
    verified = manage("audit_verify", "--checkpoints", env["DOCKYARD_AUDIT_CHECKPOINT_FILE"], env=env)
    assert verified.returncode == 0, verified.stderr
    assert "Verified 5 events" in verified.stdout and "1 checkpoints match" in verified.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET details = '{}'::jsonb",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
    ],
)
def test_the_restricted_role_may_not_change_events(restricted_role, statement):
    role, password = restricted_role
    url = portal_env_on_test_db(user=role, password=password)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM audit_auditevent")  # reading is allowed

        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table audit_auditevent"):
            conn.execute(statement)
