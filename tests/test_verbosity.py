"""-v and -vv log more, as the README promises: retries with reasons, 429s, pacing, splits."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import EmulatorFactory, cli_env, invoke_cli, served, write_ids

from bulkgene.net.pacer import AdaptiveRateLimiter

POISON = 23  # the server refuses any request naming it with a 400: its batch is split
_RETRIED = b"retrying in"
_SPLIT = b"splitting"
_THROTTLED = b"HTTP 429: the server asks us to slow down"
_PACED = b"pacing: 1000 -> 500 requests/s after HTTP 429"
_PER_REQUEST = b" -> HTTP 200, "


def _fetch(make_emulator: EmulatorFactory, tmp_path: Path, *verbosity: str) -> bytes:
    """One small run with a 503, a 429 and a split, at ``verbosity``; its stderr."""
    # a fresh emulator per run: the same seed draws the same faults in the same order
    emulator = make_emulator(faults={"http_503": 0.2, "throttle_bare": 0.2}, seed=3,
                             poison_ids=frozenset({POISON}))
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / f"out{''.join(verbosity)}"
    result = invoke_cli("fetch", str(source), "--out", str(out), "--batch-size", "10",
                        "--rate", "1000", "--concurrency", "1", "--retry-wait", "0",
                        "--max-attempts", "20", "--no-progress", *verbosity,
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    faults = {a.fault for a in served(emulator.state.arrivals())}
    statuses = {a.status for a in served(emulator.state.arrivals())}
    assert {"http_503", "throttle_bare"} <= faults and 400 in statuses, "the events happened"
    return result.stderr


def test_default_verbosity_keeps_per_event_lines_out(make_emulator: EmulatorFactory,
                                                     tmp_path: Path) -> None:
    shown = _fetch(make_emulator, tmp_path)
    for line in (_RETRIED, _SPLIT, _THROTTLED, b"pacing:", _PER_REQUEST):
        assert line not in shown, line
    assert f"refuses GeneID {POISON}".encode() in shown, "the outcome is still told"


def test_v_logs_retries_with_their_reason_429s_pacing_and_splits(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    shown = _fetch(make_emulator, tmp_path, "-v")
    retries = [line for line in shown.splitlines() if _RETRIED in line]
    assert any(b"HTTP 503" in line for line in retries), shown.decode()
    assert any(b"HTTP 429" in line for line in retries), shown.decode()
    assert _THROTTLED in shown and _PACED in shown
    assert b"splitting 10 GeneIDs from 21 after HTTP 400" in shown
    assert _PER_REQUEST not in shown, "per-request lines are for -vv"


def test_vv_adds_every_request_and_its_answer(make_emulator: EmulatorFactory,
                                              tmp_path: Path) -> None:
    verbose = _fetch(make_emulator, tmp_path, "-v")
    very = _fetch(make_emulator, tmp_path, "-vv")
    assert _RETRIED in very and _SPLIT in very, "-vv keeps what -v shows"
    requests = [line for line in very.splitlines() if b" -> HTTP " in line]
    assert any(b"-> HTTP 503" in line for line in requests)
    assert any(b"-> HTTP 400" in line for line in requests)
    assert sum(_PER_REQUEST in line for line in requests) >= 4, "one per batch at least"
    assert len(very.splitlines()) > len(verbose.splitlines()) + 4


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _debug_lines() -> Iterator[list[str]]:
    """The bulkgene logger's DEBUG messages while inside (as -v shows them)."""
    lines: list[str] = []
    handler = _Lines(lines)
    logger = logging.getLogger("bulkgene")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_v_logs_the_pacers_cut_and_each_step_back_up() -> None:
    now = [0.0]
    limiter = AdaptiveRateLimiter(10.0, recovery_period_s=2.0, clock=lambda: now[0])
    with _debug_lines() as lines:
        limiter.on_throttled(3.0)
        limiter.on_throttled(3.0)
        for _ in range(2):
            now[0] += 2.0
            limiter.refresh()
    assert lines == [
        "pacing: HTTP 429, the first in 60 s: resent, rate kept",
        "pacing: 10 -> 5 requests/s after HTTP 429 again within 60 s, everyone pausing 3 s "
        "(Retry-After)",
        "pacing: back up to 6 of 10 requests/s after a 429",
        "pacing: back up to 7 of 10 requests/s after a 429",
    ]


def test_a_404_retry_counts_against_the_404s_before_the_split(make_emulator: EmulatorFactory,
                                                               tmp_path: Path) -> None:
    """It said "attempt 2 of 8" (--max-attempts), though the third 404 splits the batch. A
    front end's 404 (NCBI's Apache, HTML) is the one retried; the API's own is a refusal."""
    emulator = make_emulator(faults={"apache_404": 0.5}, seed=2)
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    result = invoke_cli("fetch", str(source), "--out", str(tmp_path / "out"), "--batch-size",
                        "10", "--rate", "1000", "--retry-wait", "0", "--no-progress", "-v",
                        env=cli_env(emulator.base_url))
    assert result.returncode == 0, result.stderr.decode()
    retries = [line for line in result.stderr.splitlines()
               if _RETRIED in line and b"HTTP 404" in line]
    assert retries, result.stderr.decode()
    assert not any(b"of 8" in line for line in retries), retries
    assert any(b"404 2 of 3" in line for line in retries), retries
