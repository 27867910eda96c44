"""GPU discovery on a Docker host through NVML (nvidia-ml-py), when the driver is there."""

from __future__ import annotations

import logging

from portal.runtime.base import GpuInfo

log = logging.getLogger(__name__)


def discover() -> list[GpuInfo]:
    """The host's NVIDIA GPUs; none when NVML (libnvidia-ml) is not installed."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        # No driver on this host (the usual case without GPUs): nothing to report.
        log.debug("NVML not available: %s", error)
        return []
    try:
        return [_device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _device(pynvml, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    name = pynvml.nvmlDeviceGetName(handle)
    uuid = pynvml.nvmlDeviceGetUUID(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuInfo(
        index=index,
        uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
        model=name.decode() if isinstance(name, bytes) else name,
        memory_mib=int(memory.total) // (1024 * 1024),
        healthy=_healthy(pynvml, handle),
    )


def _healthy(pynvml, handle) -> bool:
    # A GPU with pending retired pages or uncorrectable ECC errors is not given out.
    try:
        errors = pynvml.nvmlDeviceGetTotalEccErrors(
            handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        )
    except pynvml.NVMLError:
        return True  # ECC not supported (consumer GPUs): no evidence of trouble
    return errors == 0


def utilisation(device_uuids: list[str]) -> dict[str, int]:
    """Current utilisation (percent) of the named GPUs, for idle detection; empty without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except (ImportError, Exception):  # noqa: BLE001  (NVMLError or a missing library alike)
        return {}
    try:
        result = {}
        for uuid in device_uuids:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode() if isinstance(uuid, str) else uuid)
            result[uuid] = int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        return result
    finally:
        pynvml.nvmlShutdown()
