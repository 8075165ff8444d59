"""An array's directory a group shares: each member's tasks write there whatever their umask."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import EmulatorFactory, gene_ids_written, invoke_cli

from bulkgene.testing import GeneUniverse

# started as root, the child loads everything a fetch loads (the interpreter may live where
# only root reads, as under /root/.pyenv), then becomes the user, under the umask most
# accounts have, and runs the command
AS_USER = """
import os, sys
import encodings.idna, asyncio, selectors, concurrent.futures.thread
import bulkgene.cli.main, bulkgene.run.download, bulkgene.net.client, bulkgene.results.verify
import bulkgene.results.merge, bulkgene.run.prepare, bulkgene.run.pipeline
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([gid])
os.setgid(gid)
os.setuid(uid)
os.umask(0o022)
sys.argv = ["bulkgene", *sys.argv[3:]]
bulkgene.cli.main.main()
"""
GROUP = 4242
MERGED = 1_700_000_000


def _as(uid: int, *args: str, base_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "BULKGENE_BASE_URL": base_url, "HOME": "/nonexistent"}
    env.pop("NCBI_API_KEY", None)
    return subprocess.run([sys.executable, "-c", AS_USER, str(uid), str(GROUP), *args],
                          capture_output=True, text=True, check=False, cwd="/", env=env,
                          timeout=120)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory set up for a lab as the README says (group 4242, mode 2770)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run tasks as two other users")
    place = Path(tempfile.mkdtemp(prefix="bulkgene-shared-array-"))
    try:
        os.chmod(place, 0o755)
        os.chown(place / ".", 0, 0)
        root = place / "ARR"
        root.mkdir()
        os.chown(root, 0, GROUP)
        os.chmod(root, 0o2770)
        (place / "ids.txt").write_text("".join(f"{i}\n" for i in (1, 2, 3, 4, 7157, 672)))
        os.chmod(place / "ids.txt", 0o644)
        yield root
    finally:
        shutil.rmtree(place)


def _universe() -> GeneUniverse:
    """1 (task 0) and 2 (task 1) merged into one gene; 3 (task 0) replaced by 4 (task 1's)."""
    return GeneUniverse(replaced={1: MERGED, 2: MERGED, 3: 4}, unknown_per_mille=0,
                        discontinued_per_mille=0, replaced_per_mille=0)


def _task(shared: Path, uid: int, index: int, base_url: str) -> subprocess.CompletedProcess[str]:
    return _as(uid, "fetch", str(shared.parent / "ids.txt"), "--out", str(shared),
               "--batch-size", "1", "--task-index", str(index), "--task-count", "2",
               "--rate", "1000", "--no-progress", base_url=base_url)


def test_two_users_of_the_group_run_the_tasks_of_one_array(make_emulator: EmulatorFactory,
                                                           shared: Path) -> None:
    """The second user's task died "writing to ARR/task-0001 failed (Permission denied)":
    ARR/.claims/layout-... was the first user's, 0755."""
    base_url = make_emulator(_universe()).base_url
    first = _task(shared, 5101, 0, base_url)
    if first.returncode != 0 and "Operation not permitted" in first.stderr:
        pytest.skip("this machine does not let root change uid")
    assert first.returncode == 0, first.stderr
    second = _task(shared, 5102, 1, base_url)
    assert second.returncode == 0, second.stderr
    union: Counter[int] = Counter()
    for task in ("task-0000", "task-0001"):
        union.update(gene_ids_written(shared / task))
    assert union == Counter({MERGED: 1, 4: 1, 7157: 1, 672: 1})
    claims = shared / ".claims"
    for directory in [claims, *(p for p in claims.rglob("*") if p.is_dir())]:
        assert directory.stat().st_mode & 0o2070 == 0o2070, directory  # the group's, g+ws
    assert invoke_cli("verify", str(shared)).returncode == 0


def test_claims_an_older_bulkgene_made_without_group_bits_are_named(
        make_emulator: EmulatorFactory, shared: Path) -> None:
    base_url = make_emulator(_universe()).base_url
    claims = shared / ".claims"
    claims.mkdir()
    os.chown(claims, 5101, GROUP)
    os.chmod(claims, 0o2755)  # what the first user's umask 022 made before
    denied = _task(shared, 5102, 1, base_url)
    if denied.returncode != 0 and "Operation not permitted" in denied.stderr:
        pytest.skip("this machine does not let root change uid")
    assert denied.returncode == 1, denied.stderr
    assert f"{claims} is owned by uid 5101, drwxr-sr-x".encode() in denied.stderr.encode()
    assert "chmod -R g+w" in denied.stderr and "Traceback" not in denied.stderr
    verdict = invoke_cli("verify", str(shared))
    assert b"-1 rows" not in verdict.stderr, verdict.stderr.decode()
