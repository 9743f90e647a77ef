"""leakprobe: an in-process resource-leak profiler for Python services.

``import leakprobe`` starts it, configured from ``LEAKPROBE_*`` environment
variables (see docs/configuration.md), and serves Prometheus metrics at
``http://LEAKPROBE_HOST:LEAKPROBE_PORT/metrics``::

    import leakprobe
    leakprobe.status()["url"]   # 'http://127.0.0.1:9464/metrics'
    leakprobe.stop()
    leakprobe.start(port=0)     # options override the environment

``LEAKPROBE_DISABLE=1`` makes the import do nothing.
"""

from ._config import ConfigError
from ._containers import CensusStat, ContainerStat, Watch, census, containers, unwatch, watch
from ._fds import FdOwner, FdRecord, FdSnapshot, FdStat, FdStatDiff
from ._heap import Frame, HeapSnapshot, HeapStat, HeapStatDiff, NativeSnapshot
from ._objects import (ObjectRecord, ObjectSnapshot, ObjectStat, ObjectStatDiff, ObjectTypeStats,
                       track_type)
from ._runtime import VERSION as __version__
from ._runtime import (fd_snapshot, heap_snapshot, memory_components, native_snapshot,
                       object_snapshot, objects, open_fds, start, start_from_import, status,
                       stop, top_sites)

__all__ = [
    "__version__", "census", "CensusStat", "ConfigError", "containers", "ContainerStat",
    "fd_snapshot", "FdOwner", "FdRecord", "FdSnapshot", "FdStat", "FdStatDiff", "Frame",
    "heap_snapshot", "HeapSnapshot", "HeapStat", "HeapStatDiff", "memory_components",
    "native_snapshot", "NativeSnapshot", "object_snapshot",
    "ObjectRecord", "objects", "ObjectSnapshot", "ObjectStat", "ObjectStatDiff",
    "ObjectTypeStats", "open_fds", "series", "start", "status", "stop", "top_sites",
    "track_type", "unwatch", "Verdict", "verdicts", "Watch", "watch",
]

_LAZY = {"Verdict", "verdicts", "series"}  # leakprobe._trends, loaded on first use


def __getattr__(name: str) -> object:
    # PEP 562: the trend API's module (and dataclasses) load when first used,
    # so `import leakprobe` does not pay for them.
    if name in _LAZY:
        from . import _trends

        return getattr(_trends, name)
    raise AttributeError(f"module 'leakprobe' has no attribute {name!r}")

start_from_import()
del start_from_import
