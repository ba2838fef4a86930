"""What one trial may ask for, checked at submit time so a request that could never run is a
422 naming the cluster's resources, not a study whose trials stay PENDING forever.

For a local Ray (no ``PHITUNE_RAY_ADDRESS``) the resources are this machine's, as Ray will size
it; for a remote cluster the driver checks ``ray.nodes()`` before launching any trial
(:func:`tuning.study.check_resources`) and fails the study with the same message.
"""

from __future__ import annotations

import os

from service.config import Settings
from service.errors import InvalidSpecError
from service.schemas import ResourcesSpec


def local_resources(settings: Settings) -> dict[str, float] | None:
    """CPU/GPU of the local Ray the driver would start; None when a cluster is configured."""
    if settings.ray_address:
        return None
    import torch

    cpus = settings.ray_num_cpus or os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count()),
            "memory_mb": _ray_memory_mb()}


def _ray_memory_mb() -> float:
    """What a local Ray offers as its ``memory`` resource: about 70 % of the available memory
    (the rest is its object store); infinite when /proc/meminfo cannot be read."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return 0.7 * int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("inf")


def check_trial_resources(resources: ResourcesSpec, settings: Settings,
                          field: str = "resources") -> None:
    available = local_resources(settings)
    if available is None:
        return
    if settings.trial_memory_mb > available["memory_mb"]:
        raise InvalidSpecError(
            f"each trial reserves PHITUNE_TRIAL_MEMORY_MB={settings.trial_memory_mb:g} MB but "
            f"the local Ray offers about {available['memory_mb']:.0f} MB; the server's "
            "operator must lower PHITUNE_TRIAL_MEMORY_MB", field=field)
    for key, asked in (("cpu", resources.cpu), ("gpu", resources.gpu)):
        have = available[key.upper()]
        if asked > have:
            raise InvalidSpecError(
                f"a trial asks for {key}={asked:g} but the local Ray has CPU="
                f"{available['CPU']:g}, GPU={available['GPU']:g}; lower {field}.{key} or set "
                "PHITUNE_RAY_ADDRESS to a cluster that has them",
                field=f"{field}.{key}")
