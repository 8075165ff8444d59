"""A grown run fetched on from its own plan, task after task: how retry and --follow-replaced end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bulkgene import layout
from bulkgene.config import DownloadConfig, NetworkSpec
from bulkgene.errors import StateError
from bulkgene.input import plan as idplan
from bulkgene.model import Snapshot, Summary
from bulkgene.output import checkpoint as ckpt
from bulkgene.run.download import download


async def go_on(out_dir: Path, network: NetworkSpec, *, handle_signals: bool = False,
                on_progress: Callable[[Snapshot], None] | None = None,
                on_task_end: Callable[[Summary], None] | None = None,
                **settings: Any) -> list[Summary]:
    """Fetch whatever every task of the run in ``out_dir`` still has to (its grown
    segments, its failed batches), one task after the other; their summaries.

    A task with nothing left (the growth gave it none) is not run. ``on_task_end`` hears
    each task's summary as it ends, before the next one starts. A
    fatal error in a task is raised at once (with that task's summary attached), as
    ``download`` raises it; an interrupted task stops the rest.
    """
    summaries: list[Summary] = []
    header = idplan.read_header(out_dir)
    for directory in layout.task_directories(out_dir):
        state = ckpt.load(directory)
        if state is None:
            raise StateError(f"{directory} has no checkpoint.json: its run never started")
        config = DownloadConfig.from_params(state.params, out_dir, network, **settings)
        if (header is not None and not state.failed and not state.rewrites
                and len(state.segments) == len(header.segments)
                and not idplan.unsettled(header.requested, header.segments, config.task,
                                         config.output.batch_size, state.is_committed)):
            continue  # a task the growth gave nothing: no run of it to account for
        summary = await download(config, handle_signals=handle_signals, on_progress=on_progress)
        summaries.append(summary)
        if on_task_end is not None:
            on_task_end(summary)
        if summary.interrupted:
            break
    return summaries
