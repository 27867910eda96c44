"""Signed checkpoints outside the database prove what a rebuilt chain would hide."""

from __future__ import annotations

import json
import logging
import os
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from portal.audit.checkpoints import CheckpointError, checkpoint_create, checkpoint_read
from portal.audit.tasks import audit_checkpoint
from tests.audit.conftest import append, rewrite_from, sql, trigger_disabled
from tests.processes import manage

pytestmark = pytest.mark.django_db


def verify_against(path) -> str:
    out = StringIO()
    call_command("audit_verify", "--checkpoints", str(path), stdout=out)
    return out.getvalue()


def test_checkpoint_command_appends_a_signed_line_and_logs_it(checkpoint_file, caplog):
    events = append(3)
    caplog.set_level(logging.INFO, logger="dockyard.audit.checkpoint")

    call_command("audit_checkpoint", stdout=StringIO())
    append(1)
    call_command("audit_checkpoint", stdout=StringIO())

    lines = checkpoint_file.read_text().splitlines()
    first = json.loads(lines[0])
    assert (first["id"], first["hash"]) == (3, events[-1].hash)
    assert set(first) == {"id", "hash", "at", "sig"} and len(first["sig"]) == 64
    assert json.loads(lines[1])["id"] == 4
    assert [c.event_id for c in checkpoint_read(lines=lines)] == [3, 4]
    assert caplog.records[0].getMessage() == lines[0]


def test_checkpoints_verify_against_an_intact_chain(checkpoint_file):
    append(3)
    checkpoint_create()
    append(3)
    checkpoint_create()

    assert "Verified 6 events (#1 to #6); 2 checkpoints match." in verify_against(checkpoint_file)


def test_a_rewritten_chain_fails_against_an_earlier_checkpoint(checkpoint_file):
    append(4)
    checkpoint_create()  # sees #4
    append(4)
    with trigger_disabled():
        rewrite_from(3, details={"n": "rewritten"})

    call_command("audit_verify", stdout=StringIO())  # the plain check passes: every link holds
    expected = r"event #4 does not match the checkpoint taken at .*: the chain was rewritten"
    with pytest.raises(CommandError, match=expected):
        verify_against(checkpoint_file)


def test_events_removed_from_the_end_fail_against_a_checkpoint(checkpoint_file):
    append(5)
    checkpoint_create()
    with trigger_disabled():
        sql("DELETE FROM audit_auditevent WHERE id >= 4")

    call_command("audit_verify", stdout=StringIO())
    with pytest.raises(CommandError, match=r"event #5 is missing: .* the chain ends at #3"):
        verify_against(checkpoint_file)


def test_checkpoints_before_since_are_checked_against_their_event(checkpoint_file):
    append(2)
    checkpoint_create()
    append(4)
    with trigger_disabled():
        rewrite_from(1, details={"n": "rewritten"})

    with pytest.raises(CommandError, match=r"event #2 does not match the checkpoint"):
        call_command("audit_verify", "--since", "4", "--checkpoints", str(checkpoint_file), stdout=StringIO())


def test_a_checkpoint_signed_with_another_key_is_refused(checkpoint_file):
    append(2)
    checkpoint_create(key="someone-elses-key")

    with pytest.raises(CommandError, match=r"line 1 .* is not signed with DOCKYARD_AUDIT_KEY"):
        verify_against(checkpoint_file)


def test_an_edited_checkpoint_line_is_refused():
    append(2)
    line = json.loads(checkpoint_create(path="").signed_line(key=settings.DOCKYARD_AUDIT_KEY))
    line["id"] = 1

    with pytest.raises(CheckpointError, match="not signed"):
        checkpoint_read(lines=[json.dumps(line)])
    with pytest.raises(CheckpointError, match="line 2 is not a checkpoint"):
        checkpoint_read(lines=["", "not json"])


def test_an_empty_log_has_no_checkpoint(checkpoint_file):
    out = StringIO()
    call_command("audit_checkpoint", stdout=out)

    assert "empty" in out.getvalue()
    assert not checkpoint_file.exists()


def test_beat_runs_the_checkpoint_task_hourly_on_the_default_queue(checkpoint_file):
    entry = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
    assert entry["task"] == audit_checkpoint.name == "audit.checkpoint"
    assert entry["schedule"] == 3600 and entry["options"] == {"queue": "default"}

    append(2)
    assert audit_checkpoint.apply().get() == 2
    assert json.loads(checkpoint_file.read_text())["id"] == 2


def test_production_refuses_to_start_without_an_audit_key():
    env = {**os.environ, "DJANGO_DEBUG": "0", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": "dockyard.example.com"}
    env.pop("DOCKYARD_AUDIT_KEY", None)

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "DOCKYARD_AUDIT_KEY" in result.stderr
