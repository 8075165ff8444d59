"""--format tsv accounts as exactly as JSON: replaced IDs found, refused IDs with their reason."""

from __future__ import annotations

from pathlib import Path

from helpers import EmulatorFactory, cli_env, expected_for, invoke_cli, read_tsv, write_ids

from bulkgene.testing import GeneUniverse


def _fetch_tsv(base_url: str, tmp_path: Path, ids: list[int]) -> Path:
    out = tmp_path / "table"
    result = invoke_cli("fetch", str(write_ids(tmp_path / "ids.txt", ids)), "--out", str(out),
                        "-q", "--format", "tsv", "--table-field", "gene-id", "--table-field",
                        "symbol", "--batch-size", "500", env=cli_env(base_url))
    assert result.returncode == 0, result.stderr.decode()
    return out


def test_replaced_ids_in_tsv_mode_are_found_not_missing(make_emulator: EmulatorFactory,
                                                        tmp_path: Path) -> None:
    emulator = make_emulator()
    ids = list(range(1, 3001))
    out = _fetch_tsv(emulator.base_url, tmp_path, ids)
    expected = expected_for(emulator.state.universe, ids)
    assert expected.replaced  # the universe replaces some of these
    missing = {int(row[0]): row[1] for row in read_tsv(out / "missing.tsv")}
    assert missing == expected.missing
    replaced = {int(row[0]): int(row[1]) for row in read_tsv(out / "replaced.tsv")}
    assert replaced == expected.replaced
    verified = invoke_cli("verify", str(out))
    assert verified.returncode == 0, verified.stderr.decode()


def test_a_merged_pair_and_a_requested_target_in_tsv_mode(make_emulator: EmulatorFactory,
                                                          tmp_path: Path) -> None:
    universe = GeneUniverse(replaced={11: 1_000_000_001, 12: 1_000_000_001, 13: 1_000_000_002})
    emulator = make_emulator(universe)
    out = _fetch_tsv(emulator.base_url, tmp_path, [11, 12, 13, 1_000_000_002, 7157])
    assert read_tsv(out / "missing.tsv") == []
    assert sorted(map(tuple, read_tsv(out / "replaced.tsv"))) == [
        ("11", "1000000001"), ("12", "1000000001"), ("13", "1000000002")]
    rows = [line.split("\t")[0] for line in
            (out / "shard-0000.tsv").read_text().splitlines()[1:]]
    assert sorted(rows) == ["1000000001", "1000000002", "7157"]  # each gene once


def test_ids_the_server_refuses_keep_their_reason_in_tsv_mode(make_emulator: EmulatorFactory,
                                                              tmp_path: Path) -> None:
    emulator = make_emulator(poison_ids=frozenset({37, 81}))
    out = _fetch_tsv(emulator.base_url, tmp_path, list(range(1, 101)))
    missing = {int(row[0]): row[1] for row in read_tsv(out / "missing.tsv")}
    assert missing[37] == "REJECTED_BY_SERVER" and missing[81] == "REJECTED_BY_SERVER"
