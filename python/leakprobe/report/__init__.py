"""Reports of `leakprobe run` built from its JSON report (schema 1,
docs/report-schema.md). Each format lives in its own module; nothing here is
imported by ``import leakprobe``, so the profiled process never loads them."""
