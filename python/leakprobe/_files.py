"""Files leakprobe writes for others to read while it runs (run files,
reports): replaced atomically, so a reader never sees half a file, and in
strict JSON."""
from __future__ import annotations

import math
import os
import threading
from typing import Any

# Held while leakprobe's own background writes (run file, targets file)
# have their temporary file open, and by leakprobe._work while it reads the
# process's open fds: a unit of work's fd figures then never include this
# short-lived fd of another thread (seen: a clean route at +1, the next
# route at -1, under `leakprobe run` writing its run file every 0.2 s).
FD_LOCK = threading.Lock()


def _reset_lock() -> None:
    global FD_LOCK
    FD_LOCK = threading.Lock()  # a fork may have copied it held by the writer thread


os.register_at_fork(after_in_child=_reset_lock)


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file beside it and
    a rename; the temporary file is removed if anything fails."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with FD_LOCK, open(temporary, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def strict_json(value: Any) -> Any:
    """`value` with NaN and infinities as None (JSON's null), through dicts,
    lists and tuples: what json.dumps(allow_nan=False) accepts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
