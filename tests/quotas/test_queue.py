"""The waiting queue: order (priority, fair share, age), backfill, no starvation, one pass."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.quotas.models import Allocation, QueuedRequest, QueueState
from portal.quotas.services import admission_pass, admit, queue_cancel, queue_enqueue, release
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.quotas.conftest import SYSTEM, ask, inventory, team_limits

pytestmark = pytest.mark.django_db


def enqueue(team, user, *, gpus=1, priority=0, age_s=0, **kwargs) -> QueuedRequest:
    entry = queue_enqueue(request=ask(team, user, gpus=gpus, **kwargs), actor=SYSTEM, priority=priority)
    if age_s:
        QueuedRequest.objects.filter(pk=entry.pk).update(enqueued_at=timezone.now() - timedelta(seconds=age_s))
    return entry


def admitted(*entries) -> list[bool]:
    states = dict(QueuedRequest.objects.values_list("pk", "state"))
    return [states[e.pk] == QueueState.ADMITTED for e in entries]


def test_higher_priority_goes_first(demo_team, alice, db):
    inventory({"node-a": 1})
    low = enqueue(demo_team, alice, priority=0, age_s=100)
    high = enqueue(demo_team, alice, priority=5)

    admission_pass()

    assert admitted(low, high) == [False, True]


def test_older_goes_first_at_equal_priority(demo_team, alice, db):
    inventory({"node-a": 1})
    young = enqueue(demo_team, alice, age_s=10)
    old = enqueue(demo_team, alice, age_s=100)

    admission_pass()

    assert admitted(young, old) == [False, True]


def test_fair_share_puts_the_team_with_least_recent_gpu_hours_first(demo_team, research_team, alice, carol):
    inventory({"node-a": 1})
    with time_machine.travel(timezone.now() - timedelta(hours=3), tick=False):
        busy = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    release(workload=busy.workload_ref, actor=SYSTEM)
    demo_entry = enqueue(demo_team, alice, age_s=100)  # older, but demo used 3 GPU-hours lately
    research_entry = enqueue(research_team, carol)

    admission_pass()

    assert admitted(demo_entry, research_entry) == [False, True]


def test_a_big_request_does_not_block_smaller_ones_behind_it(demo_team, alice, db):
    inventory({"node-a": 2})
    big = enqueue(demo_team, alice, gpus=4, age_s=100)
    small = enqueue(demo_team, alice, gpus=1)

    admission_pass()

    assert admitted(big, small) == [False, True]


def test_a_request_past_the_starvation_limit_holds_capacity(demo_team, alice, settings, db):
    settings.DOCKYARD_QUEUE_STARVATION_S = 600
    inventory({"node-a": 2})
    admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    starving = enqueue(demo_team, alice, gpus=2, age_s=3600)
    small = enqueue(demo_team, alice, gpus=1)

    result = admission_pass()

    # The free GPU is kept for the starving request instead of going to the newcomer.
    assert admitted(starving, small) == [False, False]
    assert result.held_gpus == 1


def test_a_starving_request_stops_its_team_from_backfilling_its_quota(demo_team, research_team, alice, carol, settings):
    settings.DOCKYARD_QUEUE_STARVATION_S = 600
    inventory({"node-a": 8})
    team_limits(demo_team, gpus=2)
    admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    starving = enqueue(demo_team, alice, gpus=2, age_s=3600)
    same_team = enqueue(demo_team, alice, gpus=1)
    other_team = enqueue(research_team, carol, gpus=1)

    admission_pass()

    assert admitted(starving, same_team, other_team) == [False, False, True]


def test_a_young_big_request_is_backfilled_around(demo_team, alice, settings, db):
    settings.DOCKYARD_QUEUE_STARVATION_S = 600
    inventory({"node-a": 2})
    admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    waiting = enqueue(demo_team, alice, gpus=2, age_s=60)
    small = enqueue(demo_team, alice, gpus=1)

    admission_pass()

    assert admitted(waiting, small) == [False, True]


def test_release_then_pass_admits_the_waiting_request(demo_team, alice, db):
    inventory({"node-a": 1})
    running = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    entry = enqueue(demo_team, alice)
    assert admission_pass().admitted == []

    release(workload=running.workload_ref, actor=SYSTEM)
    result = admission_pass()

    entry.refresh_from_db()
    assert [e.pk for e in result.admitted] == [entry.pk]
    assert entry.allocation.is_open and entry.allocation.gpu_rows.count() == 1
    assert AuditEvent.objects.filter(action="quota.admit", outcome="ok").count() == 2


def test_a_pass_costs_the_same_queries_for_ten_or_a_hundred_waiting(demo_team, research_team, alice, carol):
    inventory({"node-a": 4})

    def queries_for(count: int) -> int:
        for i in range(count):
            enqueue(demo_team if i % 2 else research_team, alice if i % 2 else carol, gpus=8)  # never fits
        with CaptureQueriesContext(connection) as queries:
            admission_pass()
        return len(queries)

    assert queries_for(10) == queries_for(90)


def test_a_pass_admits_many_teams_in_bulk(db):
    inventory({f"node-{i}": 8 for i in range(4)})
    people = []
    for i in range(5):
        team = TeamFactory(slug=f"t{i}")
        user = UserFactory(username=f"u{i}")
        MembershipFactory(team=team, user=user)
        team_limits(team, gpus=4)
        people.append((team, user))
    entries = [enqueue(team, user, gpus=1 + (i % 2)) for i in range(6) for team, user in people]

    result = admission_pass()

    per_team = {team.slug: sum(a.gpus for a in Allocation.objects.filter(team=team)) for team, _ in people}
    assert all(used <= 4 for used in per_team.values()) and sum(per_team.values()) == 20
    assert len(result.admitted) + result.waiting == len(entries)


def test_enqueue_twice_keeps_one_entry_and_cancel_removes_it(demo_team, alice, db):
    request = ask(demo_team, alice, gpus=1)
    first = queue_enqueue(request=request, actor=SYSTEM)
    second = queue_enqueue(request=request, actor=SYSTEM)

    assert first.pk == second.pk
    assert queue_cancel(workload=request.workload, actor=SYSTEM) is True
    assert queue_cancel(workload=request.workload, actor=SYSTEM) is False
    assert QueuedRequest.objects.get().state == QueueState.CANCELLED


def test_direct_admission_settles_the_queue_entry(demo_team, alice, db):
    inventory({"node-a": 1})
    request = ask(demo_team, alice, gpus=1)
    entry = queue_enqueue(request=request, actor=SYSTEM)

    allocation = admit(request=request, actor=SYSTEM)

    entry.refresh_from_db()
    assert entry.state == QueueState.ADMITTED and entry.allocation_id == allocation.pk
    assert admission_pass().admitted == []


def test_release_queues_an_admission_pass_on_commit(demo_team, alice, django_capture_on_commit_callbacks, db):
    from django.core.cache import cache

    from portal.quotas.services.queue import ADMISSION_QUEUED_FLAG

    running = admit(request=ask(demo_team, alice), actor=SYSTEM)
    cache.delete(ADMISSION_QUEUED_FLAG)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        release(workload=running.workload_ref, actor=SYSTEM)

    assert len(callbacks) == 1
