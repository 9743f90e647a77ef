"""urllib.request: openers (``OpenerDirector``: created by ``__init__``,
closed by ``close()``) and the HTTP responses that ``urlopen``/``open``
return (``http.client.HTTPResponse`` made by ``AbstractHTTPHandler.do_open``,
tracked only while it holds its connection; closed by ``close()``, or when
the body was read to its end, which releases the connection).

A response that the garbage collector finalizes is closed by io's
finalizer, which calls ``close()`` after setting ``_finalizing`` on the
object: that close is not counted, so the response counts as collected
while open (its connection was left to the collector)."""

from __future__ import annotations

import sys
from typing import Any

import wrapt

from ._common import Switch, guarded
from ._track import register, track_class

SWITCH = Switch("urllib")


def install(request: Any) -> bool:
    track_class(request.OpenerDirector, "close", "urllib.request.OpenerDirector")
    response = register("urllib.request.HTTPResponse")

    def do_open(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        # A response that released its connection already (fp is None)
        # holds nothing: not tracked.
        if SWITCH.on and getattr(result, "fp", None) is not None:
            guarded(SWITCH.name, response.created, result)
        return result

    wrapt.wrap_function_wrapper(request.AbstractHTTPHandler, "do_open", do_open)

    def release(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            if SWITCH.on and instance is not None and \
                    not getattr(instance, "__dict__", {}).get("_finalizing", False):
                guarded(SWITCH.name, response.closed, instance)

    client = sys.modules["http.client"]  # imported by urllib.request
    wrapt.wrap_function_wrapper(client.HTTPResponse, "close", release)
    wrapt.wrap_function_wrapper(client.HTTPResponse, "_close_conn", release)
    return True



