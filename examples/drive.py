r"""Drive load at the example services and show what leakprobe's metrics saw.

``scripts/demo.sh`` starts the services; this script does the rest, so the
shell stays thin. For each round it sends ``--requests`` requests with new
prompts (``GET /summarize``) and ``--tasks`` new documents (``POST
/documents``: one Celery task each) to every target, paced so that a round
lasts at least ``--round-seconds``, then scrapes each target's leakprobe
``/metrics`` endpoint (one per service: every process of the service is
served there, docs/multiprocess.md) and prints one table row per target,
then the top sites and tracked owners leakprobe names, summed over the
processes. It leaves the verdicts to leakprobe: ``scripts/demo.sh`` runs
each service under ``leakprobe run`` and prints its summary after this
script ends.

Usage::

    python examples/drive.py \
        --target leaky http://127.0.0.1:8000 http://127.0.0.1:9464/metrics \
        --target fixed http://127.0.0.1:8001 http://127.0.0.1:9465/metrics \
        --rounds 6 --requests 100 --tasks 20 --round-seconds 5 --processes 6

Only 127.0.0.1 is ever contacted: the URLs come from the caller.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

MIB = 1024 * 1024

# Sample name -> column heading. Labelled samples (the per-generation GC
# counters, the processes of a service: pid and role) are summed over their
# labels.
COLUMNS = {
    "process_open_fds": "open fds",
    "process_resident_memory_bytes": "RSS MiB",
    "python_gc_collections_total": "gc runs",
}
# Summed too, but may be absent (no task has run yet).
OPTIONAL_COLUMNS = {"leakprobe_work_runs_total": "tasks run"}


@dataclass
class Target:
    """One service under load and the leakprobe endpoint inside it."""

    name: str
    service_url: str
    metrics_url: str
    requests_sent: int = 0
    documents_sent: int = 0
    # One (requests so far, {sample name: value}) pair per scrape.
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # Per-site samples at the first scrape: {sample name: {site: value}}.
    sites_at_start: dict[str, dict[str, float]] = field(default_factory=dict)
    # Every sample at the first scrape (see labelled()).
    labelled_at_start: dict[str, dict[tuple, float]] = field(default_factory=dict)


def scrape(client: httpx.Client, metrics_url: str) -> dict[str, float]:
    """Read the figures in COLUMNS from a Prometheus text exposition."""
    response = client.get(metrics_url)
    response.raise_for_status()
    totals: dict[str, float] = {name: 0.0 for name in OPTIONAL_COLUMNS}
    pids = set()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            pids.add(sample.labels.get("pid"))
            if sample.name in COLUMNS:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            elif sample.name in OPTIONAL_COLUMNS and sample.labels.get("kind") == "task":
                totals[sample.name] += sample.value
    missing = sorted(set(COLUMNS) - set(totals))
    if missing:
        raise RuntimeError(f"{metrics_url} lacks {', '.join(missing)}")
    totals["processes"] = len(pids - {None}) or 1
    return totals


def labelled(client: httpx.Client, metrics_url: str) -> dict[str, dict[tuple, float]]:
    """Every sample, by name then by its labels (sorted (name, value) pairs)."""
    response = client.get(metrics_url)
    response.raise_for_status()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def site_values(client: httpx.Client, metrics_url: str, sample: str) -> dict[str, float]:
    """A per-site sample's values by their ``site`` label, summed over the
    processes."""
    return by_label(labelled(client, metrics_url), sample, "site")


SITE_SAMPLES = {
    "leakprobe_fd_site_open_fds": ("open fds created at {site}", 1.0, "{:+.0f}"),
    "leakprobe_heap_site_live_bytes": ("MiB of live heap allocated at {site}", MIB, "{:+.1f}"),
    "leakprobe_native_site_live_bytes": ("MiB of live native memory allocated under {site}",
                                         MIB, "{:+.1f}"),
}

# The RSS components leakprobe_memory_bytes splits RSS into (LEAKPROBE_NATIVE=1).
COMPONENTS = ("python_heap", "python_arena_free", "native_heap", "mmap", "other")


def by_process(samples: dict[str, dict[tuple, float]], sample: str,
               label: str | None = None) -> dict[tuple[str, str], dict[str | None, float]]:
    """The values of `sample` per process, (pid, role) -> {value of `label`
    (None without one): value}."""
    out: dict[tuple[str, str], dict[str | None, float]] = {}
    for labels, v in samples.get(sample, {}).items():
        labels = dict(labels)
        process = (labels.get("pid", "?"), labels.get("role", "?"))
        key = labels.get(label) if label else None
        out.setdefault(process, {})[key] = out.get(process, {}).get(key, 0.0) + v
    return out


def rss_explained(client: httpx.Client, target: Target) -> list[str]:
    """How much of each process's RSS growth since the first scrape its
    Python heap and native heap account for (leakprobe_memory_bytes
    {component}), for the processes that lived through the run; the
    processes that came or went during it are counted apart, as their
    growth from nothing is not growth of anything."""
    now_samples = labelled(client, target.metrics_url)
    before = by_process(target.labelled_at_start, "leakprobe_memory_bytes", "component")
    now = by_process(now_samples, "leakprobe_memory_bytes", "component")
    if not now:
        return [f"  {target.name}: no leakprobe_memory_bytes (LEAKPROBE_NATIVE is off)"]
    rss_before = by_process(target.labelled_at_start, "process_resident_memory_bytes")
    rss_now = by_process(now_samples, "process_resident_memory_bytes")
    lived = sorted(set(before) & set(now) & set(rss_before) & set(rss_now),
                   key=lambda p: rss_before[p][None] - rss_now[p][None])
    lines = []
    for process in lived:
        grown = {c: now[process].get(c, 0.0) - before[process].get(c, 0.0) for c in COMPONENTS}
        rss = rss_now[process][None] - rss_before[process][None]
        explained = grown["python_heap"] + grown["native_heap"]
        share = f"{100 * explained / rss:.0f} %" if rss >= 4 * MIB else "n/a (RSS grew < 4 MiB)"
        parts = ", ".join(f"{c} {grown[c] / MIB:+.1f}" for c in COMPONENTS)
        lines.append(f"  {target.name} pid {process[0]} ({process[1]}): RSS {rss / MIB:+.1f} MiB;"
                     f" {parts} MiB; python_heap + native_heap = {explained / MIB:+.1f} MiB ="
                     f" {share} of the RSS growth")
    came = sorted(r for p, r in set(now) - set(before))
    went = sorted(r for p, r in set(before) - set(now))
    if came or went:
        lines.append(f"  {target.name}: {len(came)} processes started during the run "
                     f"({', '.join(came) or 'none'}), {len(went)} ended "
                     f"({', '.join(went) or 'none'}): not compared")
    return lines


def where(client: httpx.Client, target: Target) -> str:
    """The code whose fds and heap grew most since the first scrape, as
    leakprobe names it (its top sites; growth, not size, is the leak)."""
    parts = []
    for sample, (what, unit, number) in SITE_SAMPLES.items():
        before = target.sites_at_start.get(sample, {})
        now = site_values(client, target.metrics_url, sample)
        growth = {site: value - before.get(site, 0.0) for site, value in now.items()}
        site, grown = max(growth.items(), key=lambda item: item[1], default=("", 0.0))
        if grown / unit >= 1:
            parts.append(number.format(grown / unit) + " " + what.format(site=site))
    return f"  {target.name}: " + ("; ".join(parts) or "no site grew")


def by_label(samples: dict[str, dict[tuple, float]], sample: str, label: str,
             **match: str) -> dict[str, float]:
    """The values of `sample` by one label, among samples whose other labels
    match `match`, summed over the rest (the processes' pid and role)."""
    out: dict[str, float] = {}
    for labels, v in samples.get(sample, {}).items():
        labels = dict(labels)
        if all(labels.get(k) == want for k, want in match.items()) and label in labels:
            out[labels[label]] = out.get(labels[label], 0.0) + v
    return out


def what_leaks(client: httpx.Client, target: Target) -> list[str]:
    """The tracked resource owners and containers that grew since the first
    scrape, as leakprobe names them: type, counts, creation site, the fds
    they hold; container name and size."""
    before, now = target.labelled_at_start, labelled(client, target.metrics_url)
    lines = []
    live_before = by_label(before, "leakprobe_objects_live", "type")
    for type_name, live in sorted(by_label(now, "leakprobe_objects_live", "type").items(),
                                  key=lambda item: -item[1]):
        grown = live - live_before.get(type_name, 0.0)
        created, closed, collected = (
            by_label(now, name, "type").get(type_name, 0.0)
            - by_label(before, name, "type").get(type_name, 0.0)
            for name in ("leakprobe_objects_created_total", "leakprobe_objects_closed_total",
                         "leakprobe_objects_collected_while_open_total"))
        if grown < 1 and collected < 1:
            continue
        sites = by_label(now, "leakprobe_objects_site_live", "site", type=type_name)
        site = max(sites.items(), key=lambda item: item[1], default=("?", 0))[0]
        owned = by_label(now, "leakprobe_owner_open_fds", "owner").get(type_name)
        holding = f", holding {owned:.0f} open fds" if owned else ""
        lines.append(f"{grown:+.0f} {type_name} alive ({created:.0f} created, {closed:.0f} "
                     f"closed, {collected:.0f} collected while open), created at "
                     f"{site}{holding}")
    size_before = by_label(before, "leakprobe_container_size", "name")
    sizes = by_label(now, "leakprobe_container_size", "name")
    maxsizes = by_label(now, "leakprobe_container_maxsize", "name")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        grown = size - size_before.get(name, 0.0)
        if grown >= 1:
            bound = f"maxsize {maxsizes[name]:.0f}" if name in maxsizes else "unbounded"
            lines.append(f"container {name} grew by {grown:.0f} entries to {size:.0f} ({bound})")
    if not lines:  # say what was tracked, so that "nothing grew" is a finding
        held = ", ".join(
            f"{type_name} {live:.0f} alive ("
            f"{by_label(now, 'leakprobe_objects_created_total', 'type').get(type_name, 0):.0f}"
            f" created, "
            f"{by_label(now, 'leakprobe_objects_collected_while_open_total', 'type').get(type_name, 0):.0f}"
            f" collected while open)"
            for type_name, live in sorted(by_label(now, "leakprobe_objects_live", "type").items())
            if by_label(now, "leakprobe_objects_created_total", "type").get(type_name, 0) > 0)
        lines.append("no tracked object or container grew" + (f"; {held}" if held else ""))
    return [f"  {target.name}: {line}" for line in lines]


def wait_until_ready(client: httpx.Client, targets: list[Target], deadline: float,
                     processes: int) -> None:
    """Block until every service and every metrics endpoint answers 200, and
    each endpoint serves at least ``processes`` processes."""
    pending = [url for t in targets for url in (t.service_url + "/healthz", t.metrics_url)]
    while pending:
        url = pending[0]
        try:
            if client.get(url).status_code == 200 and (
                    url.endswith("/healthz") or scrape(client, url)["processes"] >= processes):
                pending.pop(0)
                continue
        except (httpx.TransportError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in time (with {processes} processes)")
        time.sleep(0.2)


def run_round(client: httpx.Client, target: Target, count: int, tasks: int,
              seconds: float) -> None:
    """Send ``count`` requests, each with a prompt the service has not seen,
    and ``tasks`` new documents, spread over at least ``seconds``."""
    started = time.monotonic()
    steps = max(count, tasks, 1)
    for step in range(steps):
        if step * count // steps != (step + 1) * count // steps:
            prompt = f"{target.name}-prompt-{target.requests_sent}"
            response = client.get(target.service_url + "/summarize", params={"q": prompt})
            response.raise_for_status()
            target.requests_sent += 1
        if step * tasks // steps != (step + 1) * tasks // steps:
            text = f"{target.name}-document-{target.documents_sent}"
            response = client.post(target.service_url + "/documents", params={"text": text})
            response.raise_for_status()
            target.documents_sent += 1
        pause = started + seconds * (step + 1) / steps - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def print_row(round_no: int | str, target: Target) -> None:
    requests, values = target.history[-1]
    print(
        f"{round_no:>5}  {target.name:<8} {requests:>8} {target.documents_sent:>6}"
        f"  {values['leakprobe_work_runs_total']:>9.0f}  {values['processes']:>5.0f}"
        f"  {values['process_open_fds']:>8.0f}"
        f"  {values['process_resident_memory_bytes'] / MIB:>8.1f}"
        f"  {values['python_gc_collections_total']:>7.0f}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "SERVICE_URL", "METRICS_URL"),
        help="a service to load and its leakprobe /metrics URL (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=100, help="per round and target")
    parser.add_argument("--tasks", type=int, default=0,
                        help="documents (Celery tasks) per round and target")
    parser.add_argument("--round-seconds", type=float, default=0.0,
                        help="a round's least duration (the load is spread over it)")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes each metrics endpoint serves before the load starts")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for start-up")
    parser.add_argument("--deadline", type=float, default=90.0, help="seconds for the whole run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets = [Target(name, url.rstrip("/"), metrics) for name, url, metrics in args.target]
    started = time.monotonic()

    with httpx.Client(timeout=10.0) as client:
        wait_until_ready(client, targets, started + args.wait, args.processes)
        print(
            f"{'round':>5}  {'service':<8} {'requests':>8} {'tasks':>6}  {'tasks run':>9}"
            f"  {'procs':>5}  {'open fds':>8}  {'RSS MiB':>8}  {'gc runs':>7}"
        )
        for target in targets:
            target.history.append((0, scrape(client, target.metrics_url)))
            target.sites_at_start = {
                sample: site_values(client, target.metrics_url, sample) for sample in SITE_SAMPLES
            }
            target.labelled_at_start = labelled(client, target.metrics_url)
            print_row(0, target)
        # One thread per target: the services are separate processes, so
        # loading them side by side halves the demo's wall-clock time.
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            for round_no in range(1, args.rounds + 1):
                list(pool.map(lambda t: run_round(client, t, args.requests, args.tasks,
                                                  args.round_seconds), targets))
                for target in targets:
                    scraped = scrape(client, target.metrics_url)
                    target.history.append((target.requests_sent, scraped))
                    print_row(round_no, target)
                if time.monotonic() - started > args.deadline:
                    print(
                        f"stopping early: past the {args.deadline:.0f} s deadline", file=sys.stderr
                    )
                    break
        print()
        print("What grew most, and where it was created (leakprobe's top sites):")
        for target in targets:
            print(where(client, target))
        print()
        print("Where the RSS went (leakprobe_memory_bytes, growth since the first scrape):")
        for target in targets:
            for line in rss_explained(client, target):
                print(line)
        print()
        print("What leaks (leakprobe's tracked resource owners and containers):")
        for target in targets:
            for line in what_leaks(client, target):
                print(line)

    return 0


if __name__ == "__main__":
    sys.exit(main())
