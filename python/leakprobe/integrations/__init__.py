"""Integrations with application frameworks that users may also wire by
hand: ``leakprobe.integrations.asgi`` (FastAPI, Starlette, any ASGI app).
Each is installed automatically by its adapter (leakprobe.adapters) when
the framework is imported; see docs/multiprocess.md."""
