"""The pacing margin a run learnt (bulkgene/budget/margin.py) is remembered for the next run on the
same path, capped, and only trusted when plausible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_config

from bulkgene.budget.margin import (
    MARGIN_FILE_NAME,
    REMEMBERED_FOR_S,
    Remembered,
    recall_margin,
    recall_margin_s,
    remember_margin_s,
)
from bulkgene.net.pacer import INITIAL_MARGIN_S, MARGIN_PROVEN_S, REMEMBERED_CAP_S
from bulkgene.run.sharing import budget_directory, paced_limiter, path_directory


def test_a_remembered_margin_comes_back(tmp_path: Path) -> None:
    remember_margin_s(tmp_path / "server", 0.05, now_wall=1000.0)
    assert recall_margin_s(tmp_path / "server", now_wall=1000.0 + 3600) == 0.05
    assert not [p for p in (tmp_path / "server").iterdir() if p.name.endswith(".tmp")]


def test_a_lesson_older_than_a_month_is_forgotten(tmp_path: Path) -> None:
    remember_margin_s(tmp_path, 0.05, now_wall=1000.0)
    assert recall_margin_s(tmp_path, now_wall=1000.0 + REMEMBERED_FOR_S + 1) is None


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"margin_s": -1, "learnt_at": 0}',
                                     b'{"margin_s": 1e9, "learnt_at": 0}',
                                     b'{"margin_s": NaN, "learnt_at": 0}',
                                     b'{"margin_s": 0.05, "learnt_at": 1e300}',
                                     b'{"margin_s": 0.05}', b"x" * 100_000])
def test_an_implausible_margin_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MARGIN_FILE_NAME).write_bytes(content)
    assert recall_margin_s(tmp_path, now_wall=0.0) is None


def test_a_fifo_or_a_link_in_its_place_is_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / MARGIN_FILE_NAME)
    assert recall_margin_s(tmp_path) is None  # and it does not hang
    (tmp_path / MARGIN_FILE_NAME).unlink()
    remember_margin_s(tmp_path / "elsewhere", 0.05)
    (tmp_path / MARGIN_FILE_NAME).symlink_to(tmp_path / "elsewhere" / MARGIN_FILE_NAME)
    assert recall_margin_s(tmp_path) is None


def test_a_directory_that_cant_be_written_only_costs_the_memory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    remember_margin_s(tmp_path / "file" / "server", 0.05)  # no exception
    assert recall_margin_s(tmp_path / "file" / "server") is None


async def test_a_run_starts_from_the_margin_learnt_on_its_path_and_stores_what_it_learns(
        tmp_path: Path) -> None:
    config = make_config(["ids.txt"], tmp_path / "out", base_url="http://127.0.0.1:1/datasets/v2",
                         budget_dir=tmp_path / "budget")
    assert paced_limiter(config, 10.0).margin_s == INITIAL_MARGIN_S
    # the path, not the key: another key at the same server shares the lesson
    assert budget_directory(config).parent == path_directory(config)
    remember_margin_s(path_directory(config), 0.05)
    limiter = paced_limiter(config, 10.0)
    assert limiter.margin_s == 0.05

    now = [0.0]
    limiter = paced_limiter(config, 10.0, clock=lambda: now[0])
    limiter.on_server_limit(10, None, now[0])
    for _ in range(10):  # a full second of ours
        limiter.note_sent(now[0])
        now[0] += 0.1
    limiter.on_throttled(None, 10, now[0] - 0.1)  # bunched arrivals: wider, by a step
    now[0] += MARGIN_PROVEN_S + 1
    limiter.refresh()
    assert recall_margin_s(path_directory(config)) == pytest.approx(0.075)


async def test_a_remembered_margin_narrower_than_the_default_does_not_lower_it(tmp_path: Path) -> None:
    config = make_config(["ids.txt"], tmp_path / "out", budget_dir=tmp_path / "budget")
    remember_margin_s(path_directory(config), 0.001)
    assert paced_limiter(config, 10.0).margin_s == INITIAL_MARGIN_S


def test_the_lesson_keeps_its_age_and_the_tests_it_refuted(tmp_path: Path) -> None:
    remember_margin_s(tmp_path, 0.05, now_wall=10_000.0, refuted=2, age_s=600.0)
    remembered = recall_margin(tmp_path, now_wall=10_000.0)
    assert remembered == Remembered(0.05, 9_400.0, 2)
    (tmp_path / MARGIN_FILE_NAME).write_bytes(b'{"margin_s": 0.05, "learnt_at": 9400}')
    assert recall_margin(tmp_path, now_wall=10_000.0) == Remembered(0.05, 9_400.0, 0)  # older file
    (tmp_path / MARGIN_FILE_NAME).write_bytes(
        b'{"margin_s": 0.05, "learnt_at": 9400, "refuted": -1}')
    assert recall_margin(tmp_path, now_wall=10_000.0) is None


async def test_a_remembered_margin_is_capped_and_tested_once_old(tmp_path: Path) -> None:
    """What an older bulkgene (or a bad minute) left is a starting point, not a month's tax."""
    config = make_config(["ids.txt"], tmp_path / "out", budget_dir=tmp_path / "budget")
    remember_margin_s(path_directory(config), 0.2, age_s=2 * 3600.0)
    now = [0.0]
    limiter = paced_limiter(config, 10.0, clock=lambda: now[0])
    assert limiter.margin_s == REMEMBERED_CAP_S
    remembered = [recall_margin_s(path_directory(config))]
    while limiter.snapshot().lesson.margin_s > INITIAL_MARGIN_S and now[0] < 600:
        now[0] += 1.0  # clean running: no 429
        limiter.refresh()
        if (latest := recall_margin_s(path_directory(config))) != remembered[-1]:
            remembered.append(latest)
    now[0] += MARGIN_PROVEN_S
    limiter.refresh()
    remembered.append(recall_margin_s(path_directory(config)))
    assert remembered == pytest.approx([0.2, 0.05, INITIAL_MARGIN_S])  # step by step
    assert now[0] < 60, "within a run, not a month"
