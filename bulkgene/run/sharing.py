"""Where a run's key budget lives, and the lease that sets its pacer's share of it.

Without ``--rate``, every run takes a lease on the budget of its key (its IP without one) at
the server it talks to, and its pacer runs at the share the lease gives it (bulkgene/budget
says how leases are shared live). The budget's directory, first that applies:
``--budget-dir`` / ``$BULKGENE_BUDGET_DIR``; for an array task, ``DIR/.budget`` (its tasks
may run on any node that sees ``DIR``); else a per-user directory on the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

from bulkgene.budget import BudgetLease, LeaseView, budget_path, default_budget_root, list_leases
from bulkgene.budget.margin import recall_margin, remember_margin_s
from bulkgene.config import (
    ANONYMOUS_REQUESTS_PER_SECOND,
    KEYED_REQUESTS_PER_SECOND,
    DownloadConfig,
)
from bulkgene.layout import BUDGET_DIR_NAME
from bulkgene.net.pacer import (
    INITIAL_MARGIN_S,
    REMEMBERED_CAP_S,
    AdaptiveRateLimiter,
    MarginLesson,
)

log = logging.getLogger("bulkgene")
BUDGET_DIR_ENV = "BULKGENE_BUDGET_DIR"


def budget_root(config: DownloadConfig) -> Path:
    """The directory under which this run's budget lives (see the module docstring)."""
    if config.network.budget_dir is not None:
        return config.network.budget_dir
    if os.environ.get(BUDGET_DIR_ENV):
        return Path(os.environ[BUDGET_DIR_ENV])
    if config.task.count > 1:
        return config.out_dir / BUDGET_DIR_NAME
    return default_budget_root()


def trusted_root(config: DownloadConfig) -> Path:
    """Below this directory no link is followed and new directories take its bits: the budget
    root the user chose, but for an array task ``DIR`` itself (whoever can write in ``DIR``
    could plant ``DIR/.budget``)."""
    root = budget_root(config)
    return config.out_dir if root == config.out_dir / BUDGET_DIR_NAME else root


def _server_tag(base_url: str) -> str:
    """The server's host as a directory name: the emulator's budget is not NCBI's."""
    host = urlsplit(base_url).hostname or "server"
    return re.sub(r"[^A-Za-z0-9._-]", "_", host)


def path_directory(config: DownloadConfig) -> Path:
    """Where what is learnt about the path to this server is kept (whatever the key)."""
    return budget_root(config) / _server_tag(config.network.base_url)


def paced_limiter(config: DownloadConfig, rate_rps: float,
                  clock: Callable[[], float] | None = None) -> AdaptiveRateLimiter:
    """The run's pacer, starting from the lesson an earlier run on this path left (capped:
    a wider margin is an episode, not the path) and leaving its own for the next."""
    directory = path_directory(config)
    remembered = recall_margin(directory)
    margin_s, refuted, age_s = INITIAL_MARGIN_S, 0, 0.0
    if remembered is not None and remembered.margin_s > INITIAL_MARGIN_S:
        margin_s = min(REMEMBERED_CAP_S, remembered.margin_s)
        refuted, age_s = remembered.refuted, max(0.0, time.time() - remembered.learnt_at)
        log.debug("pacing margin %.0f ms, as learnt by an earlier run on this path %s ago",
                  1000 * margin_s, _duration(age_s))
    root = trusted_root(config)

    def remember(lesson: MarginLesson) -> None:
        remember_margin_s(directory, lesson.margin_s, refuted=lesson.refuted,
                          age_s=lesson.age_s, root=root)

    return AdaptiveRateLimiter(rate_rps, clock=clock, margin_s=margin_s, on_margin=remember,
                               margin_refuted=refuted, margin_age_s=age_s)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def budget_directory(config: DownloadConfig, root: Path | None = None) -> Path:
    """The directory of the leases of every process using this key at this server (under
    ``root``, by default this run's ``budget_root``)."""
    key = config.network.api_key.reveal() if config.network.api_key else None
    return budget_path(key, (root or budget_root(config)) / _server_tag(config.network.base_url))


def key_budget_rps(config: DownloadConfig) -> float:
    """NCBI's budget for the key (for the IP without one)."""
    return KEYED_REQUESTS_PER_SECOND if config.network.api_key else ANONYMOUS_REQUESTS_PER_SECOND


def lease_places(config: DownloadConfig) -> list[tuple[Path, Path]]:
    """Every budget directory this run takes a lease in, with its trusted root: its own, and
    for an array task the per-user one too, so that a plain fetch on the same key (which
    knows only that one) counts the array's tasks and they count it."""
    own = (budget_directory(config), trusted_root(config))
    if budget_root(config) == config.out_dir / BUDGET_DIR_NAME:  # an array task's own
        return [own, (budget_directory(config, default_budget_root()), default_budget_root())]
    return [own]


def lease_directories(config: DownloadConfig) -> list[Path]:
    return [directory for directory, _ in lease_places(config)]


@contextlib.asynccontextmanager
async def shared_budget(config: DownloadConfig, limiter: AdaptiveRateLimiter
                        ) -> AsyncIterator[list[BudgetLease]]:
    """Hold leases on the key's budget while the body runs (none with an explicit --rate);
    the pacer runs at the smallest share any of them gives."""
    if config.network.requests_per_second is not None:
        yield []
        return
    total = key_budget_rps(config)
    limiter.set_share(0.0, total)  # nothing leaves until every lease is admitted
    places = lease_places(config)
    shares = dict.fromkeys(range(len(places)), 0.0)

    def share_setter(which: int) -> Callable[[float], None]:
        def on_share(share: float) -> None:
            shares[which] = share
            _apply_share(limiter, min(shares.values()), total)
        return on_share

    async with contextlib.AsyncExitStack() as stack:
        leases = [await stack.enter_async_context(BudgetLease(
            directory, total, out_dir=str(config.work_dir.resolve()), root=root,
            give_up_after_s=config.network.retry.outage_s, on_share=share_setter(which)))
            for which, (directory, root) in enumerate(places)]
        # each lease's own clock, asked before every request: after a SIGSTOP the pacer's
        # timers may fire before the heartbeat that would have lowered the share
        limiter.set_permit(lambda: all(lease.share_rps > 0 for lease in leases))
        try:
            yield leases
        finally:
            limiter.set_permit(None)


def _apply_share(limiter: AdaptiveRateLimiter, share_rps: float, total_rps: float) -> None:
    if share_rps > 0 and share_rps != limiter.ceiling:
        log.debug("rate budget: %.3g of the key's %g requests/s", share_rps, total_rps)
    limiter.set_share(share_rps, total_rps)


def status_roots(out_dir: Path, budget_dir: Path | None = None) -> list[Path]:
    """Where a fetch writing under ``out_dir`` may hold leases: ``budget_dir`` (the fetch's
    --budget-dir; $BULKGENE_BUDGET_DIR by default), ``DIR/.budget``, the per-user directory."""
    roots = [default_budget_root(), out_dir / BUDGET_DIR_NAME]
    if budget_dir is None and os.environ.get(BUDGET_DIR_ENV):
        budget_dir = Path(os.environ[BUDGET_DIR_ENV])
    if budget_dir is not None:
        roots.insert(0, budget_dir)
    return list(dict.fromkeys(roots))


def leases_sharing_with(out_dir: Path, budget_dir: Path | None = None) -> list[LeaseView]:
    """Live leases of every budget that a process writing under ``out_dir`` holds now (in
    the ``status_roots``)."""
    target = str(out_dir.resolve())
    directories = [directory for root in status_roots(out_dir, budget_dir)
                   for directory in (sorted(root.glob("*/*")) if root.is_dir() else [])]
    # only the budgets this run holds a lease in are watched for heartbeats (a stale lease
    # of another user's budget must not slow `status` down)
    ours = {view.directory for view in list_leases(directories, watch_s=0.0)
            if _under(view.record.out_dir, target)}
    live = [view for view in list_leases(sorted(ours)) if view.alive]
    found: list[LeaseView] = []
    for directory in directories:
        leases = [view for view in live if view.directory == directory]
        if any(_under(view.record.out_dir, target) for view in leases):
            found.extend(leases)
    # an array task holds a lease in two budgets (its own and the per-user one): show it once
    seen: set[tuple[str, int, str]] = set()
    unique = []
    for view in found:
        owner = (view.record.host, view.record.pid, view.record.out_dir)
        if owner not in seen:
            seen.add(owner)
            unique.append(view)
    return unique


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
