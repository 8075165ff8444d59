"""The pacing margin a run learnt is remembered for the next run on the same path, and only trusted
when plausible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_config

from bulkgene.budget.margin import (
    MARGIN_FILE_NAME,
    REMEMBERED_FOR_S,
    recall_margin_s,
    remember_margin_s,
)
from bulkgene.net.pacer import INITIAL_MARGIN_S, MARGIN_PROVEN_S
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
    remember_margin_s(path_directory(config), 0.075)
    limiter = paced_limiter(config, 10.0)
    assert limiter.margin_s == 0.075

    now = [0.0]
    limiter = paced_limiter(config, 10.0)
    limiter._clock = lambda: now[0]
    limiter.on_server_limit(10, None, now[0])
    limiter.on_throttled(None, 10, now[0])  # bunched arrivals: wider, by a step
    now[0] += MARGIN_PROVEN_S + 1
    limiter._recover(now[0])
    assert recall_margin_s(path_directory(config)) == pytest.approx(0.1)


async def test_a_remembered_margin_narrower_than_the_default_does_not_lower_it(tmp_path: Path) -> None:
    config = make_config(["ids.txt"], tmp_path / "out", budget_dir=tmp_path / "budget")
    remember_margin_s(path_directory(config), 0.001)
    assert paced_limiter(config, 10.0).margin_s == INITIAL_MARGIN_S
