"""The admin pages for the inventory (draining is audited) and the demo data."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from portal.audit.models import AuditEvent
from portal.quotas.models import GpuDevice, ResourceProfile, TeamQuota

pytestmark = pytest.mark.django_db


def test_staff_drain_a_device_from_the_admin_and_it_is_audited(web, root, two_nodes):
    device = two_nodes[0]
    response = web(root).post(
        "/admin/quotas/gpudevice/", {"action": "drain", "_selected_action": [device.pk]}, follow=True
    )

    assert response.status_code == 200
    assert GpuDevice.objects.get(pk=device.pk).drained
    assert AuditEvent.objects.get(action="gpu.drain").target_id == str(device.pk)


def test_staff_declare_a_node_in_the_admin(web, root):
    response = web(root).post(
        "/admin/quotas/gpunode/add/",
        {
            "name": "gpu-box",
            "backend": "docker",
            "source": "declared",
            "devices-TOTAL_FORMS": "1",
            "devices-INITIAL_FORMS": "0",
            "devices-0-index": "0",
            "devices-0-uuid": "GPU-box-0",
            "devices-0-model": "A100",
            "devices-0-memory_mib": "81920",
            "devices-0-health": "healthy",
        },
    )

    assert response.status_code == 302
    assert GpuDevice.objects.get(uuid="GPU-box-0").node.name == "gpu-box"
    assert AuditEvent.objects.filter(action="gpu_node.create").exists()


def test_seed_demo_adds_profiles_and_quotas_once():
    call_command("seed_demo")
    profiles = list(ResourceProfile.objects.values_list("slug", "cpus", "memory_gib", "gpus"))
    quotas = list(TeamQuota.objects.values_list("team__slug", "gpus").order_by("team__slug"))
    call_command("seed_demo")

    assert list(ResourceProfile.objects.values_list("slug", "cpus", "memory_gib", "gpus")) == profiles
    assert [(slug, int(cpus), int(mem), gpus) for slug, cpus, mem, gpus in profiles] == [
        ("small", 1, 2, 0),
        ("medium", 2, 4, 0),
        ("gpu-1", 4, 16, 1),
    ]
    assert quotas == [("demo", 2), ("research", 8)]
