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
from ._fds import FdRecord, FdSnapshot, FdStat, FdStatDiff
from ._heap import Frame, HeapSnapshot, HeapStat, HeapStatDiff
from ._objects import (ObjectRecord, ObjectSnapshot, ObjectStat, ObjectStatDiff, ObjectTypeStats,
                       track_type)
from ._runtime import VERSION as __version__
from ._runtime import (fd_snapshot, heap_snapshot, object_snapshot, objects, open_fds, start,
                       start_from_import, status, stop, top_sites)

__all__ = [
    "ConfigError", "FdRecord", "FdSnapshot", "FdStat", "FdStatDiff", "Frame", "HeapSnapshot",
    "HeapStat", "HeapStatDiff", "ObjectRecord", "ObjectSnapshot", "ObjectStat", "ObjectStatDiff",
    "ObjectTypeStats", "__version__", "fd_snapshot", "heap_snapshot", "object_snapshot",
    "objects", "open_fds", "start", "status", "stop", "top_sites", "track_type",
]

start_from_import()
del start_from_import
