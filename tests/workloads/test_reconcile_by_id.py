"""Reconcile acts on the container it observed (by id) and reports only what it did, on the
real Docker engine."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from portal.audit.models import AuditEvent
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import LABEL_KIND, LABEL_MANAGED, LABEL_UID
from portal.workloads.reconcile import reconcile_pass
from tests.conftest import RUN_LABEL, TEST_RUN

pytestmark = pytest.mark.django_db


def _labelled(engine, *, name: str, uid: str, kind: str = "workspace"):
    """A running container labelled as Dockyard's workload `uid`, under a name of the test's choosing."""
    return engine.containers.run(
        settings.DOCKYARD_BASE_IMAGE,
        ["sleep", "300"],
        name=name,
        labels={LABEL_MANAGED: "true", LABEL_UID: uid, LABEL_KIND: kind, RUN_LABEL: TEST_RUN},
        detach=True,
        init=True,
    )


def _exists(engine, container_id: str) -> bool:
    return bool(engine.containers.list(all=True, filters={"id": container_id}))


def test_a_labelled_container_under_another_name_is_removed_once_and_then_not_reported(engine):
    uid = str(uuid.uuid4())
    container = _labelled(engine, name=f"by-hand-{uid[:8]}", uid=uid)
    try:
        first = [c for c in reconcile_pass() if c.uid == uid]
        assert [(c.kind, c.result) for c in first] == [("orphan", "removed")]
        assert not _exists(engine, container.id)

        assert [c for c in reconcile_pass() if c.uid == uid] == []
        assert AuditEvent.objects.filter(action="reconcile.orphan", target_id=uid).count() == 1
    finally:
        if _exists(engine, container.id):
            container.remove(force=True)


def test_a_stray_beside_a_workloads_own_container_is_removed_and_its_own_container_stays(engine):
    uid = str(uuid.uuid4())
    stray = _labelled(engine, name=f"copy-of-{uid[:8]}", uid=uid, kind="nobody")
    own = _labelled(engine, name=f"dockyard-{uid}", uid=uid, kind="nobody")
    try:
        corrections = [c for c in reconcile_pass() if c.uid == uid]
        # Both go (no workload kind "nobody" wants either), each exactly once and by its own id.
        assert [c.result for c in corrections] == ["removed", "removed"]
        assert not _exists(engine, stray.id) and not _exists(engine, own.id)
        assert [c for c in reconcile_pass() if c.uid == uid] == []
    finally:
        for container in (stray, own):
            if _exists(engine, container.id):
                container.remove(force=True)


def test_a_removal_that_fails_is_not_reported_and_the_next_pass_tries_again(engine, monkeypatch):
    uid = str(uuid.uuid4())
    container = _labelled(engine, name=f"by-hand-{uid[:8]}", uid=uid)
    backend = get_backend()

    def refuse(handle, keep_data=True):
        raise RuntimeError_("removing: the Docker engine does not answer", reason="engine_unreachable")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(backend, "remove", refuse)
            assert [c for c in reconcile_pass() if c.uid == uid] == []
        assert _exists(engine, container.id)
        assert not AuditEvent.objects.filter(target_id=uid).exists()

        assert [c.result for c in reconcile_pass() if c.uid == uid] == ["removed"]
        assert not _exists(engine, container.id)
    finally:
        if _exists(engine, container.id):
            container.remove(force=True)
