"""An input that holds the API key never copies it into rejects.tsv, a message or a dry run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import EmulatorFactory, cli_env, invoke_cli

KEY = "0123456789abcdef0123456789abcdef0a1b"  # 36 characters, as NCBI's keys are


def _everything_written(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file()) if out.exists() else b""


def test_the_key_file_among_the_inputs_is_refused(tmp_path: Path) -> None:
    """`fetch *.txt --api-key-file ncbi_key.txt`: the glob took the key file in."""
    (tmp_path / "ids.txt").write_text("7157\n672\n")
    key_file = tmp_path / "ncbi_key.txt"
    key_file.write_text(KEY + "\n")
    out = tmp_path / "G1"
    for extra in ((), ("--dry-run",)):
        result = invoke_cli("fetch", str(tmp_path / "ids.txt"), str(key_file), "--out", str(out),
                            "--api-key-file", str(key_file), *extra)
        assert result.returncode == 2, result.stderr.decode()
        assert b"is your --api-key-file" in result.stderr
        assert KEY.encode() not in result.stdout + result.stderr
        assert not out.exists()


@pytest.mark.parametrize("where", ["alone", "beside-ids", "inside-a-line"])
def test_an_input_holding_the_key_masks_it_everywhere(make_emulator: EmulatorFactory,
                                                      tmp_path: Path, where: str) -> None:
    """`NCBI_API_KEY=$KEY bulkgene fetch ncbi_key.txt`: bulkgene knows the key, so masks it."""
    emulator = make_emulator(valid_keys=frozenset({KEY}))
    lines = {"alone": f"{KEY}\n", "beside-ids": f"7157\n{KEY}\n672\n",
             "inside-a-line": f"7157\n{'x' * 70} key={KEY} more\n"}[where]
    source = tmp_path / "ncbi_key.txt"
    source.write_text(lines)
    out = tmp_path / "out"
    env = cli_env(emulator.base_url, NCBI_API_KEY=KEY)
    dry = invoke_cli("fetch", str(source), "--out", str(out), "--dry-run", env=env)
    result = invoke_cli("fetch", str(source), "--out", str(out), "--no-progress", env=env)
    assert result.returncode == (1 if where == "alone" else 0), result.stderr.decode()
    for output in (dry.stdout, dry.stderr, result.stdout, result.stderr, _everything_written(out)):
        assert KEY.encode() not in output
        assert KEY[:20].encode() not in output, "not even a truncated part of it"
    assert b"***" in dry.stdout + dry.stderr
    if where != "alone":
        assert b"***" in (out / "rejects.tsv").read_bytes()


def test_a_key_file_given_as_input_through_a_link_is_refused_too(tmp_path: Path) -> None:
    key_file = tmp_path / "ncbi_key.txt"
    key_file.write_text(KEY + "\n")
    os.symlink(key_file, tmp_path / "ids.txt")
    result = invoke_cli("fetch", str(tmp_path / "ids.txt"), "--out", str(tmp_path / "o"),
                        "--api-key-file", str(key_file))
    assert result.returncode == 2 and b"is your --api-key-file" in result.stderr


def test_the_key_file_as_taxa_file_is_refused(tmp_path: Path) -> None:
    """Its key would be sent to the server as a taxon name and kept in missing_taxa.tsv."""
    key_file = tmp_path / "ncbi_key.txt"
    key_file.write_text(KEY + "\n")
    result = invoke_cli("fetch", "--taxa-file", str(key_file), "--out", str(tmp_path / "o"),
                        "--api-key-file", str(key_file))
    assert result.returncode == 2 and b"--taxa-file" in result.stderr
    assert b"is your --api-key-file" in result.stderr and KEY.encode() not in result.stderr
