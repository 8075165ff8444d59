"""``fetch --dry-run`` tells the truth: requests as packed, the directory's resume state and
what a real run would refuse, disk against free space; it sends and writes nothing."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import EmulatorFactory, cli_env, invoke_cli, served, write_ids

from bulkgene.testing import EmulatorThread

NINE_DIGITS = range(100_000_001, 100_010_001)  # 10 batches, each two GET requests


def dry(source: Path, out: Path, emulator: EmulatorThread, *options: str) -> tuple[int, str]:
    result = invoke_cli("fetch", str(source), "--out", str(out), "--dry-run", *options,
                        env=cli_env(emulator.base_url))
    return result.returncode, (result.stdout + result.stderr).decode()


def test_requests_are_counted_as_packed(emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", NINE_DIGITS)
    code, shown = dry(source, tmp_path / "out", emulator)
    assert code == 0, shown
    assert "requests: 20 for 10 batches (2.0 a batch" in shown
    assert "--endpoint dataset-report would send each batch in one" in shown
    code, shown = dry(source, tmp_path / "out", emulator, "--endpoint", "dataset-report")
    assert "requests: 10 for 10 batches (1.0 a batch" in shown
    assert not served(emulator.state.arrivals()) and not (tmp_path / "out").exists()


def test_the_disk_the_output_takes_is_estimated_against_the_free_space(
        emulator: EmulatorThread, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 2001))
    _, shown = dry(source, tmp_path / "out", emulator)
    assert re.search(r"disk: about 9\.0 MB for up to 2000 COMPLETE reports \(~4\.5 KB each\); "
                     r"[\d.]+ [KMG]?B free in ", shown), shown
    _, gzipped = dry(source, tmp_path / "out", emulator, "--compress", "gzip",
                     "--returned-content", "IDS_ONLY")
    assert "for up to 2000 IDS_ONLY reports (~15 bytes each, gzipped)" in gzipped, gzipped


def test_a_directory_to_resume_leaves_only_what_is_not_committed(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    emulator = make_emulator()
    source = write_ids(tmp_path / "ids.txt", range(1, 3001))
    out = tmp_path / "out"
    emulator.state.outage_status = 503  # every batch fails: all of them are fetched again
    args = ("fetch", str(source), "--out", str(out), "--max-attempts", "1", "--no-progress")
    assert invoke_cli(*args, env=cli_env(emulator.base_url)).returncode == 3
    before = (out / "checkpoint.json").read_bytes()
    requests = len(emulator.state.arrivals())
    code, shown = dry(source, out, emulator)
    assert code == 0, shown
    assert f"{out} holds this run: 0 of 3 batches committed, 3 failed (fetched again); 3 " \
           "to fetch" in shown
    emulator.state.outage_status = None
    assert invoke_cli(*args, env=cli_env(emulator.base_url)).returncode == 0
    code, shown = dry(source, out, emulator)
    assert "holds this run: 3 of 3 batches committed; 0 to fetch" in shown
    assert "requests: 0 for 0 batches" in shown and "time: about 0 s" in shown
    assert len(emulator.state.arrivals()) > requests, "the real runs did send"
    assert (out / "checkpoint.json").read_bytes() != before


def test_what_a_real_run_would_refuse_is_said_now(emulator: EmulatorThread,
                                                  tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", range(1, 101))
    out = tmp_path / "out"
    assert invoke_cli("fetch", str(source), "--out", str(out), "--no-progress",
                      env=cli_env(emulator.base_url)).returncode == 0
    sent = len(emulator.state.arrivals())
    code, shown = dry(source, out, emulator, "--format", "ndjson")
    assert code == 1
    assert "a real run would stop here" in shown and "format: was 'json', now 'ndjson'" in shown
    write_ids(source, range(1, 102))
    code, shown = dry(source, out, emulator)
    assert code == 1 and "input: the ID file(s) differ" in shown
    code, shown = dry(source, out, emulator, "--restart")
    assert code == 0 and "--restart: a run in" in shown
    assert len(emulator.state.arrivals()) == sent, "a dry run sends nothing"
