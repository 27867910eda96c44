"""The GPU inventory fed from the runtime's real capacity() (this host has no GPUs)."""

from __future__ import annotations

import pytest

from portal.quotas.models import GpuDevice, GpuNode
from portal.quotas.services.inventory import gpu_inventory_discover
from portal.runtime import get_backend

pytestmark = pytest.mark.django_db


def test_discovery_records_this_docker_host_as_a_node_without_gpus():
    [host] = get_backend().capacity()

    result = gpu_inventory_discover()

    assert result.added == [host.name]
    node = GpuNode.objects.get(name=host.name)
    assert (node.backend, node.source) == ("docker", GpuNode.Source.DISCOVERED)
    assert not GpuDevice.objects.exists()


def test_discovery_twice_changes_nothing_the_second_time():
    gpu_inventory_discover()
    assert gpu_inventory_discover().has_changes is False
