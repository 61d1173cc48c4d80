"""What benches/soak.py makes of its run: the readings, the pass/fail checks, the report (a
Markdown table, printed and optionally put in docs/soak.md)."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RSS_TOLERANCE = 0.05
KINDS = (
    "echo broadcast reset fin half_frame reset_before_101 hook_raise async_echo async_raise "
    "foreign_origin"
).split()
RAISING = ("hook_raise", "async_raise")
CENSUS = ("connections", "asyncio_tasks", "threads", "gc_objects")


@dataclass
class Reading:
    """The server at one moment: its RSS, open fds, Prometheus samples, and the census of
    its Python side."""

    rss_kib: int
    fds: int
    metrics: dict[str, float]
    census: dict[str, Any]
    at: float

    @property
    def tasks(self) -> int:
        return int(self.metrics["roomcast_runtime_tasks"])

    def as_dict(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "rss_kib": self.rss_kib,
            "fds": self.fds,
            "tasks": self.tasks,
            "open": int(m["roomcast_connections_open"]),
            "accepted": int(m["roomcast_connections_accepted_total"]),
            "rooms": int(m["roomcast_rooms"]),
            "hook_errors": int(m["roomcast_hook_errors_total"]),
            "hook_calls": int(m["roomcast_hook_calls_total"]),
            "slow_consumer_closes": int(m["roomcast_slow_consumer_closes_total"]),
            "origin_refusals": int(
                m.get('roomcast_connections_refused_total{reason="origin",status="403"}', 0)
            ),
            "protocol_errors": {
                k.split('"')[1]: int(v)
                for k, v in m.items()
                if k.startswith("roomcast_protocol_errors_total{")
            },
            "census": self.census,
        }


def summed(clients: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in clients:
        for k, v in (c.get(key) or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def verdict(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(check, passed, figures) for every pass/fail criterion."""
    base, end = r["readings"]["baseline"], r["readings"]["end"]
    n_stay, st, srv = r["args"]["stayers"], r["stayers"], r["server"]
    clients = r["churn"]["clients"]
    cycles = sum(c["cycles"] for c in clients)
    ok = summed(clients, "ok_by_kind")
    errors = summed(clients, "errors_by_kind")
    slow = summed(clients, "slow_readers")
    never = {k.split(":")[1]: v for k, v in slow.items() if k.startswith("never_read:")}
    late = {k.split(":")[1]: v for k, v in slow.items() if k.startswith("read_late:")}
    late_other = {k: v for k, v in late.items() if k.startswith("close_") and k != "close_1013"}
    # The server shed these: the never readers it dropped, the late ones that found a Close
    # 1013 or found the socket already closed (it waited close_timeout for them in vain).
    expected_sheds = (
        never.get("dropped", 0) + late.get("close_1013", 0) + late.get("ended_without_close", 0)
    )
    sheds = end["slow_consumer_closes"] - base["slow_consumer_closes"]
    codes_1013 = end["census"].get("closes", {}).get("1013", 0) - base["census"].get(
        "closes", {}
    ).get("1013", 0)
    raised_ok = sum(ok.get(k, 0) for k in RAISING)
    hook_errors = end["hook_errors"] - base["hook_errors"]
    growth = end["rss_kib"] / base["rss_kib"] - 1
    churn_errors = sum(errors.values())
    refused = end.get("origin_refusals", 0) - base.get("origin_refusals", 0)
    return [
        (
            f"churned the {r['args']['connections']:,} connections asked for",
            cycles >= r["args"]["connections"],
            f"{cycles:,} in {r['churn']['seconds']:,.0f} s",
        ),
        (
            "the server stayed up, no panic",
            srv["alive_at_end"] and srv["panics"] == 0,
            f"alive: {srv['alive_at_end']}, exit on SIGTERM {srv['exit_code']}, "
            f"panics {srv['panics']}",
        ),
        (
            "RSS back within 5 % of the baseline",
            abs(growth) <= RSS_TOLERANCE,
            f"{base['rss_kib'] / 1024:,.1f} → {end['rss_kib'] / 1024:,.1f} MiB ({growth:+.1%})",
        ),
        (
            "open file descriptors back to the baseline",
            end["fds"] == base["fds"],
            f"{base['fds']} → {end['fds']}",
        ),
        (
            "runtime tasks back to the baseline",
            end["tasks"] == base["tasks"],
            f"{base['tasks']} → {end['tasks']}",
        ),
        (
            "rooms back to the baseline",
            end["rooms"] == base["rooms"],
            f"{base['rooms']} → {end['rooms']}",
        ),
        (
            "open connections = the stayers",
            end["open"] == n_stay,
            f"{end['open']} open, {n_stay} stayers",
        ),
        (
            "Python Connection objects = the stayers",
            end["census"].get("connections") == n_stay,
            f"{base['census'].get('connections')} → {end['census'].get('connections')}",
        ),
        (
            "every stayer got every number, once, in order",
            st["complete"] == n_stay and st["published"] > 0 and not st.get("disconnected"),
            st.get("error")
            or f"{st['complete']}/{n_stay} complete, {st['published']:,} numbers, lost "
            f"{st['lost']}, duplicated {st['duplicated']}, disconnected {st['disconnected']}"
            + "".join(f"; {p}" for p in st["problems"][:3]),
        ),
        (
            "slow readers that never read dropped by the server",
            never.get("dropped", 0) > 0 and sum(never.values()) == never.get("dropped"),
            ", ".join(f"{k} {v}" for k, v in sorted(never.items())) or "none ran",
        ),
        (
            "slow readers that read late found a Close 1013",
            late.get("close_1013", 0) > 0 and not late_other,
            ", ".join(f"{k} {v}" for k, v in sorted(late.items())) or "none ran",
        ),
        (
            "the server shed exactly the slow readers, each with 1013",
            sheds == expected_sheds == codes_1013,
            f"slow_consumer_closes {sheds}, on_disconnect saw 1013 {codes_1013} times, "
            f"slow readers shed {expected_sheds}",
        ),
        (
            "hooks that raised were logged and their connections kept",
            hook_errors >= raised_ok and srv["hook_tracebacks"] == end["hook_errors"],
            f"{hook_errors:,} raised ({raised_ok:,} raising cycles answered after), "
            f"{srv['hook_tracebacks']:,} tracebacks logged",
        ),
        (
            "pages of other sites were refused (403), and only they",
            refused == ok.get("foreign_origin", 0) and refused > 0,
            f"{refused:,} refused for their Origin, {ok.get('foreign_origin', 0):,} "
            "foreign-origin cycles got 403",
        ),
        (
            "no churn cycle or slow reader failed",
            churn_errors == 0,
            ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none",
        ),
    ]


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def heap(base: Any, end: Any) -> str:
    if not base or not end or base == "?" or end == "?":
        return "—"
    return (
        f"{mib(base['in_use'] / 1024)} / {mib(base['free_held'] / 1024)} → "
        f"{mib(end['in_use'] / 1024)} / {mib(end['free_held'] / 1024)}"
    )


def rss_series(series: list[list[int]], points: int = 8) -> str:
    """A few of the RSS samples taken every 10 s, evenly spread, the last one included."""
    if not series:
        return "—"
    step = max(1, len(series) // points)
    picked = series[::-1][::step][::-1]
    return ", ".join(f"{accepted / 1000:,.0f}k: {mib(rss)}" for _, accepted, rss in picked)


def write_report(r: dict[str, Any], checks: list[tuple[str, bool, str]]) -> str:
    a, ch = r["args"], r["churn"]
    start, base, end = (r["readings"][k] for k in ("start", "baseline", "end"))
    clients = ch["clients"]
    cycles = sum(c["cycles"] for c in clients)
    ok, errors = summed(clients, "ok_by_kind"), summed(clients, "errors_by_kind")
    lg_cpu = sum(c["loadgen_cpu_pct"] or 0 for c in clients)
    srv_cpu = r["server_cpu_s"] / ch["seconds"] * 100
    closes_end, closes_base = end["census"].get("closes", {}), base["census"].get("closes", {})
    closes = {k: v - closes_base.get(k, 0) for k, v in closes_end.items()}
    proto = {k: v - base["protocol_errors"].get(k, 0) for k, v in end["protocol_errors"].items()}
    # A census that failed has only its error: every figure of it shows as "?".
    cb = {k: "?" for k in CENSUS} | base["census"]
    ce = {k: "?" for k in CENSUS} | end["census"]
    cpus = os.cpu_count()
    flags = "--quick" if a["connections"] == 50_000 else f"--connections {a['connections']}"
    if a.get("tls"):
        flags += " --tls"
    rows = [
        (
            "connections churned",
            f"{cycles:,} (+{sum(c['cycles'] for c in r['warmup']['clients']):,} warm-up)",
        ),
        ("WebSocket connections the server accepted", f"{end['accepted'] - base['accepted']:,}"),
        ("churn duration", f"{ch['seconds']:,.1f} s"),
        ("connects per second", f"{cycles / ch['seconds']:,.0f}"),
        ("server CPU (all its threads)", f"{srv_cpu:,.0f} % of one core"),
        ("load generator CPU", f"{lg_cpu:,.0f} % of one core ({a['clients']} process(es))"),
        (
            "RSS: stayers in / baseline / peak / end",
            f"{mib(start['rss_kib'])} / {mib(base['rss_kib'])} / "
            f"{mib(ch['peak_rss_kib'])} / {mib(end['rss_kib'])} MiB",
        ),
        ("RSS end vs baseline", f"{end['rss_kib'] / base['rss_kib'] - 1:+.2%}"),
        ("RSS during the churn (accepted so far: MiB)", rss_series(ch["series"])),
        ("open fds: baseline / end", f"{base['fds']} / {end['fds']}"),
        ("runtime tasks: baseline / end", f"{base['tasks']} / {end['tasks']}"),
        ("open connections at the end", f"{end['open']}"),
        ("rooms: baseline / end", f"{base['rooms']} / {end['rooms']}"),
        (
            "Python: Connection objects / asyncio tasks / threads, baseline → end",
            f"{cb['connections']} / {cb['asyncio_tasks']} / {cb['threads']} → "
            f"{ce['connections']} / {ce['asyncio_tasks']} / {ce['threads']}",
        ),
        (
            "malloc heap in use / free but held, baseline → end (MiB)",
            heap(cb.get("malloc"), ce.get("malloc")),
        ),
        (
            "Python: gc-tracked objects, baseline → end",
            f"{cb['gc_objects']} → {ce['gc_objects']}",
        ),
        ("settle before the end reading", f"{r['settle_s']:.1f} s"),
        (
            "close codes `on_disconnect` saw",
            ", ".join(f"{k}: {v:,}" for k, v in sorted(closes.items())),
        ),
        ("protocol errors (server)", ", ".join(f"{k}: {v:,}" for k, v in sorted(proto.items()))),
        (
            "slow readers shed (server's slow_consumer_closes)",
            f"{end['slow_consumer_closes'] - base['slow_consumer_closes']:,}",
        ),
        (
            "hooks that raised (server's hook_errors)",
            f"{end['hook_errors'] - base['hook_errors']:,}",
        ),
        ("hook calls", f"{end['hook_calls'] - base['hook_calls']:,}"),
    ]
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        f"Run of {when}: `python benches/soak.py {flags}` (concurrency {a['concurrency']}, "
        f"{a['slow']} slow-reader loops, {a['stayers']} stayers, {a['rate']:.0f} numbered "
        f"broadcasts a second, warm-up {a['warmup']:,}); {cpus} cores shared with other work, "
        f"Linux {platform.release()}, Python {platform.python_version()}.",
        "",
        "| figure | value |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "| cycle kind | completed | failed |",
        "|---|---:|---:|",
    ]
    for kind in KINDS:
        failed = sum(v for k, v in errors.items() if k.startswith(kind + ":"))
        lines.append(f"| {kind} | {ok.get(kind, 0):,} | {failed:,} |")
    lines += ["", "| check | result | figures |", "|---|---|---|"]
    lines += [f"| {name} | {'pass' if good else 'FAIL'} | {fig} |" for name, good, fig in checks]
    return "\n".join(lines) + "\n"


def splice_docs(path: Path, report: str, which: str) -> None:
    """Replaces what is between `which`'s markers in `path` (a quick run and a full one each
    have their place) with `report`."""
    begin, end = f"<!-- soak report {which}: begin -->", f"<!-- soak report {which}: end -->"
    text = path.read_text()
    head, found, rest = text.partition(begin)
    if not found:
        raise SystemExit(f"soak: {path} has no {begin} marker")
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{report}{end}{tail}")
