"""The GPU inventory: syncing what the runtime reports, and draining devices."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from portal.audit.services import Actor, audit_record
from portal.quotas.models import GpuDevice, GpuHealth, GpuNode
from portal.quotas.services.admission import inventory_lock
from portal.quotas.values import GpuInfo, NodeInfo


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped_nodes: list[str] = field(default_factory=list)  # declared by staff; sync leaves them alone

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or self.missing)


def gpu_inventory_sync(*, backend: str, nodes: list[NodeInfo], actor: Actor | None = None) -> SyncResult:
    """Makes the discovered inventory of one backend match what its `capacity()` reported.

    New nodes and devices are added; devices are matched by UUID, so a GPU moved to another
    slot keeps its history. A device no longer reported is marked missing, never deleted
    (allocations refer to it). Nodes declared by staff are left alone.
    """
    actor = actor or Actor.system()
    result = SyncResult()
    now = timezone.now()
    with transaction.atomic():
        inventory_lock()
        known = {n.name: n for n in GpuNode.objects.filter(name__in=[n.name for n in nodes])}
        seen: set[str] = set()
        for info in nodes:
            node = _node(info=info, known=known.get(info.name), now=now, result=result)
            if node is not None:
                seen |= {g.uuid for g in info.gpus}
                for gpu in info.gpus:
                    _device(node=node, info=gpu, now=now, result=result)
        _mark_missing(backend=backend, seen=seen, result=result)
        if result.has_changes:
            audit_record(
                actor=actor,
                action="gpu.inventory_sync",
                details={
                    "backend": backend,
                    "added": result.added,
                    "changed": result.changed,
                    "missing": result.missing,
                },
            )
    return result


def gpu_inventory_discover(*, actor: Actor | None = None) -> SyncResult:
    """Syncs the inventory with what the configured runtime backend reports (`capacity()`:
    NVML on Docker hosts, node status on Kubernetes)."""
    from portal.runtime import get_backend

    backend = get_backend()
    nodes = [
        NodeInfo(
            name=node.name,
            backend=node.backend,
            cpus=Decimal(str(node.cpus)),
            memory_gib=(Decimal(node.memory_mib) / 1024).quantize(Decimal("0.01")),
            gpus=tuple(
                GpuInfo(index=g.index, uuid=g.uuid, model=g.model, memory_mib=g.memory_mib, healthy=g.healthy)
                for g in node.gpus
            ),
        )
        for node in backend.capacity()
    ]
    return gpu_inventory_sync(backend=backend.name, nodes=nodes, actor=actor)


def _node(*, info: NodeInfo, known: GpuNode | None, now, result: SyncResult) -> GpuNode | None:
    if known is not None and known.source == GpuNode.Source.DECLARED:
        result.skipped_nodes.append(info.name)
        return None
    fields = {"backend": info.backend, "cpus": info.cpus, "memory_gib": info.memory_gib, "last_seen_at": now}
    if known is None:
        result.added.append(info.name)
        return GpuNode.objects.create(name=info.name, source=GpuNode.Source.DISCOVERED, **fields)
    GpuNode.objects.filter(pk=known.pk).update(**fields)
    return known


def _device(*, node: GpuNode, info: GpuInfo, now, result: SyncResult) -> None:
    health = GpuHealth.HEALTHY if info.healthy else GpuHealth.UNHEALTHY
    wanted = {"node": node, "index": info.index, "model": info.model, "memory_mib": info.memory_mib, "health": health}
    device = GpuDevice.objects.filter(uuid=info.uuid).first()
    if device is None:
        GpuDevice.objects.create(uuid=info.uuid, last_seen_at=now, **wanted)
        result.added.append(f"{node.name}/{info.index}")
        return
    if any(getattr(device, name) != value for name, value in wanted.items()):
        result.changed.append(f"{node.name}/{info.index}")
    GpuDevice.objects.filter(pk=device.pk).update(last_seen_at=now, **wanted)


def _mark_missing(*, backend: str, seen: set[str], result: SyncResult) -> None:
    gone = (
        GpuDevice.objects.filter(node__backend=backend, node__source=GpuNode.Source.DISCOVERED)
        .exclude(uuid__in=seen)
        .exclude(health=GpuHealth.MISSING)
        .select_related("node")
    )
    result.missing += [str(device) for device in gone]
    gone.update(health=GpuHealth.MISSING)


def gpu_device_drain(*, devices: QuerySet[GpuDevice] | list[GpuDevice], drained: bool, actor: Actor) -> int:
    """Drains devices (no new allocations; current work keeps running) or puts them back.

    Under the inventory lock: once this commits, no admission still deciding can pick them.
    Returns how many devices changed; devices already in that state are not audited again.
    """
    with transaction.atomic():
        inventory_lock()
        pks = [d.pk for d in devices]
        changing = list(GpuDevice.objects.filter(pk__in=pks, drained=not drained).select_related("node"))
        GpuDevice.objects.filter(pk__in=[d.pk for d in changing]).update(drained=drained)
        for device in changing:
            audit_record(
                actor=actor,
                action="gpu.drain" if drained else "gpu.undrain",
                target=device,
                details={"node": device.node.name, "index": device.index, "uuid": device.uuid},
            )
    return len(changing)
