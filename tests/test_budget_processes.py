"""Budget leases across real processes: three share the budget, a SIGKILLed one stops counting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulkgene.budget import list_leases

TOTAL_RPS = 9.0
# short timings so the test takes seconds; dead/fence still leave a loaded machine room
CHILD = """
import asyncio, sys
from pathlib import Path
from bulkgene.budget import BudgetLease

async def main() -> None:
    async with BudgetLease(Path(sys.argv[1]), float(sys.argv[2]), out_dir=sys.argv[3],
                           heartbeat_s=0.1, dead_after_s=1.5, fence_after_s=1.0,
                           window_s=0.1) as lease:
        async def report() -> None:
            async for share in lease.watch():
                print(share, flush=True)
        reporter = asyncio.create_task(report())
        await asyncio.to_thread(sys.stdin.read)  # run until the test closes our stdin
        reporter.cancel()
    print(lease.share_rps, flush=True)

asyncio.run(main())
"""


class Child:
    def __init__(self, budget_dir: Path, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.shares: list[float] = []
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(budget_dir), str(TOTAL_RPS), str(out_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.shares.append(float(line))

    @property
    def share(self) -> float | None:
        return self.shares[-1] if self.shares else None


def wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 60.0) -> None:
    give_up = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < give_up, f"never saw {what}"
        time.sleep(0.02)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[Child]]:
    started = [Child(tmp_path / "budget", tmp_path / f"out-{i}") for i in range(3)]
    yield started
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
        child.reader.join()
        for pipe in (child.process.stdin, child.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.mark.slow
def test_three_processes_share_the_budget_and_survive_a_sigkill(tmp_path: Path,
                                                                children: list[Child]) -> None:
    wait_for(lambda: all(child.share == TOTAL_RPS / 3 for child in children), "three shares of 3")
    views = list_leases(tmp_path / "budget")
    assert sorted(view.record.out_dir for view in views) == sorted(str(c.out_dir) for c in children)
    assert {view.record.pid for view in views} == {child.process.pid for child in children}
    assert all(view.alive and view.record.state == "active" for view in views)

    killed, *survivors = children
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    wait_for(lambda: all(child.share == TOTAL_RPS / 2 for child in survivors), "two shares of 4.5")

    for child in survivors:
        assert child.process.stdin is not None
        child.process.stdin.close()
        assert child.process.wait(timeout=60) == 0
        assert child.shares[-1] == 0.0  # told its pacer to stop before it left
    # the killed process's lease was collected by the survivors: its pid is dead on this host
    assert list_leases(tmp_path / "budget") == []
