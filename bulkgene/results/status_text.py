"""``bulkgene status`` as people and scripts read it: the table, the JSON, the lines under them."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import orjson

from bulkgene.budget import LeaseView
from bulkgene.budget.record import shown
from bulkgene.results.status import TaskStatus, incomplete_reasons

_RAW = 4096  # JSON keeps whole values (a lease is at most 4 KiB)


def as_json(statuses: list[TaskStatus], leases: list[LeaseView] | None = None,
            whole_array: bool = True, one_task: str | None = None) -> bytes:
    tasks = [asdict(s) for s in statuses]
    total = {key: sum(t[key] or 0 for t in tasks) for key in (
        "batches_committed", "batches_failed", "found", "missing", "failed_ids", "records",
        "replaced", "requests_all_runs", "retries_all_runs", "throttled_all_runs",
        "bytes_received_all_runs", "missing_discontinued", "missing_replaced",
        "missing_not_in_history", "missing_refused", "followed", "refused")}
    total["batches_total"] = (None if any(s.batches_total is None for s in statuses)
                              else sum(s.batches_total or 0 for s in statuses))
    total["requested"] = (None if any(s.requested is None for s in statuses)
                          else sum(s.requested or 0 for s in statuses))
    total["pending_ids"] = (None if any(s.pending_ids is None for s in statuses)
                            else sum(s.pending_ids or 0 for s in statuses))
    total["complete"] = not incomplete_reasons(statuses, whole_array)
    total["running"] = sum(1 for s in statuses if s.running)
    # one task's directory read alone: its totals are that task's share, not the list's
    total["one_task_of_array"] = one_task
    # a lease is another user's file: its strings are escaped here too (JSON leaves C1
    # controls and bidi overrides raw, and `status --json` is often read on a terminal)
    budget = [{"host": shown(view.record.host, _RAW), "pid": view.record.pid,
               "out_dir": shown(view.record.out_dir, _RAW),
               "state": shown(view.record.state, _RAW), "rate_rps": view.record.rate_rps,
               "share_rps": view.record.share_rps, "budget_rps": view.record.total_rps,
               "heartbeat_age_s": round(view.heartbeat_age_s, 1)} for view in leases or []]
    return orjson.dumps({"tasks": tasks, "total": total, "budget_leases": budget},
                        option=orjson.OPT_INDENT_2) + b"\n"


def leases_table(leases: list[LeaseView]) -> str:
    """The processes sharing this directory's key budget now, one line each (what others
    wrote is escaped: no terminal escape, line break or forged line gets through)."""
    totals = [view.record.total_rps for view in leases if 1 <= view.record.total_rps <= 1000]
    total = f"{min(totals):g}" if totals else "?"
    lines = [f"the key's {total} requests/s are shared live by {len(leases)} process(es):"]
    for view in leases:
        record = view.record
        lines.append(f"  {shown(record.host, 64)} pid {record.pid}  {shown(record.state, 16)}  "
                     f"{record.rate_rps:.2f}/s of a {record.share_rps:.2f}/s share  "
                     f"-> {shown(record.out_dir)}")
    return "\n".join(lines)


def no_lease_hint(statuses: list[TaskStatus], searched: list[Path]) -> str | None:
    """Why a running task shows no lease: it has none (--rate), or it is elsewhere."""
    if not any(s.running for s in statuses):
        return None
    return (f"no budget lease of this run was found (looked in {', '.join(map(str, searched))}): "
            "a run with --rate takes none; for one started with --budget-dir D (or "
            "BULKGENE_BUDGET_DIR), run `bulkgene status DIR --budget-dir D`")


def _age(timestamp: float) -> str:
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _known(value: int | None) -> str:
    return "?" if value is None else str(value)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def history_line(statuses: list[TaskStatus]) -> str | None:
    """What the gene history says of the missing GeneIDs (after explain), or None."""
    classes = [sum(s.missing_discontinued for s in statuses),
               sum(s.missing_replaced for s in statuses),
               sum(s.missing_not_in_history for s in statuses),
               sum(s.missing_refused for s in statuses)]
    followed = sum(s.followed for s in statuses)
    if not any(classes) and not followed:
        return None
    missing = sum(s.missing for s in statuses)
    text = (f"missing, by the gene history: {classes[0]} discontinued, {classes[1]} replaced "
            f"by a live GeneID, {classes[2]} not in the history")
    if classes[3]:
        text += f", {classes[3]} refused by the server and not in the history"
    if missing > sum(classes):
        text += f", {missing - sum(classes)} not explained yet (bulkgene explain)"
    if followed:
        text += f"; {followed} found through a replaced GeneID's live successor"
    return text


def refused_line(statuses: list[TaskStatus], run_dir: Path) -> str | None:
    """The GeneIDs the server refused (never answered, perhaps live), and what to do; or None."""
    refused = sum(s.refused for s in statuses)
    if not refused:
        return None
    return (f"refused: {refused} GeneIDs were refused by the server (REJECTED_BY_SERVER in "
            "missing.tsv): never answered, they may well be live genes. Fetch them again "
            f"with: bulkgene retry {run_dir}")


def as_table(statuses: list[TaskStatus]) -> str:
    header = ("task", "batches", "failed", "IDs", "pending", "found", "missing", "records",
              "throttled", "last run", "IDs/s", "ETA", "updated", "state")
    rows = []
    for s in statuses:
        state = ("not started" if s.absent else "starting" if s.starting
                 else "listing interrupted" if s.listing_interrupted is not None
                 else "running" if s.running else "locked elsewhere" if s.running is None
                 else "complete" if s.complete else "incomplete")
        rows.append((Path(s.directory).name, f"{s.batches_committed}/{s.batches_total or '?'}",
                     str(s.batches_failed), _known(s.requested), _known(s.pending_ids),
                     str(s.found), str(s.missing), str(s.records), str(s.throttled_all_runs),
                     f"{s.latest_run_elapsed_s:.0f}s", f"{s.latest_run_ids_per_s:.0f}",
                     _eta(s.eta_s),
                     _age(s.last_activity), state))
    if len(statuses) > 1:
        known = all(s.batches_total is not None for s in statuses)
        rows.append(("total",
                     f"{sum(s.batches_committed for s in statuses)}/"
                     f"{sum(s.batches_total or 0 for s in statuses) if known else '?'}",
                     str(sum(s.batches_failed for s in statuses)),
                     _known(None if any(s.requested is None for s in statuses)
                            else sum(s.requested or 0 for s in statuses)),
                     _known(None if any(s.pending_ids is None for s in statuses)
                            else sum(s.pending_ids or 0 for s in statuses)),
                     str(sum(s.found for s in statuses)), str(sum(s.missing for s in statuses)),
                     str(sum(s.records for s in statuses)),
                     str(sum(s.throttled_all_runs for s in statuses)),
                     f"{max(s.latest_run_elapsed_s for s in statuses):.0f}s",
                     f"{sum(s.latest_run_ids_per_s for s in statuses):.0f}",
                     _eta(max((s.eta_s for s in statuses if s.eta_s is not None), default=None)),
                     _age(max(s.last_activity for s in statuses)),
                     f"{sum(1 for s in statuses if s.running)} running"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    table = "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                      .rstrip() for row in [header, *rows])
    return (table + "\nlast run, IDs/s and ETA: the latest run alone (summary.json is that "
            "run's account); batches, IDs and throttled: all runs together")
