"""The resume state and its durability protocol; nothing else writes checkpoint.json.

Protocol (one commit = one or more finished batches):
  1. the writer appends the batches' lines to shards and side reports,
  2. flushes and fsyncs every file it touched,
  3. saves the checkpoint: write ``checkpoint.json.tmp``, fsync it, rename it over
     ``checkpoint.json``, fsync the directory.
A kill at any instant leaves either the old or the new checkpoint. On the next start every
file is cut back to the length the checkpoint recorded, so torn tails and half-written
batches vanish before anything new is written.

The committed set is kept small whatever the run's size: a watermark below which every
batch is settled, the few committed batches above it, and the failed ones (retried on the
next run). A commit therefore costs the same after 10 or 100 000 batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkgene import durable
from bulkgene.errors import CorruptCheckpoint, FingerprintMismatch
from bulkgene.layout import CHECKPOINT_NAME, MISSING_NAME, REPLACED_NAME, is_shard_name

FORMAT_VERSION = 2  # 2: grouped parameters, the server, a checksum
_RESTART_HINT = ("pass --restart to move the old run aside (nothing is deleted) and start over, "
                 "or use another --out directory")


def fingerprint(params: dict[str, Any], input_digests: list[str]) -> str:
    """A digest of everything that decides what the output directory contains."""
    material = orjson.dumps({"params": params, "inputs": input_digests},
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(material, digest_size=16).hexdigest()


@dataclass
class Checkpoint:
    """What has been durably committed in one output directory."""

    fingerprint: str
    params: dict[str, Any]
    inputs: list[dict[str, str]]
    file_lengths: dict[str, int] = field(default_factory=dict)
    done_below: int = 0
    done_above: set[int] = field(default_factory=set)
    failed: dict[int, int] = field(default_factory=dict)  # batch index -> IDs in it
    totals: dict[str, int] = field(default_factory=dict)
    total_batches: int | None = None
    updated_at: float = 0.0
    run_started_at: float = 0.0  # the latest run: when it started and how many IDs were
    run_ids_at_start: int = 0  # done then (status's elapsed time and rate)

    def is_committed(self, batch_index: int) -> bool:
        if batch_index < self.done_below:
            return batch_index not in self.failed
        return batch_index in self.done_above

    def mark_committed(self, batch_index: int) -> None:
        self.failed.pop(batch_index, None)
        if batch_index >= self.done_below:
            self.done_above.add(batch_index)
        self._advance()

    def mark_failed(self, batch_index: int, id_count: int) -> None:
        self.failed[batch_index] = id_count
        self._advance()

    def _advance(self) -> None:
        while self.done_below in self.done_above or self.done_below in self.failed:
            self.done_above.discard(self.done_below)
            self.done_below += 1

    @property
    def committed_batches(self) -> int:
        return self.done_below - sum(1 for b in self.failed if b < self.done_below) + len(
            self.done_above)

    @property
    def ids_done(self) -> int:
        """IDs answered so far: found, missing or unverified (failed IDs are not progress)."""
        totals = self.totals
        return totals.get("found", 0) + totals.get("missing", 0) + totals.get("unverified", 0)

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self.totals[name] = self.totals.get(name, 0) + value

    def to_bytes(self) -> bytes:
        """The checkpoint as JSON with a checksum of its content (a mismatch is damage)."""
        content = {
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "params": self.params,
            "inputs": self.inputs,
            "file_lengths": self.file_lengths,
            "done_below": self.done_below,
            "done_above": sorted(self.done_above),
            "failed": {str(b): n for b, n in sorted(self.failed.items())},
            "totals": self.totals,
            "total_batches": self.total_batches,
            "updated_at": self.updated_at,
            "run_started_at": self.run_started_at,
            "run_ids_at_start": self.run_ids_at_start,
        }
        content["checksum"] = content_checksum(content)
        return orjson.dumps(content, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_bytes(cls, raw: bytes, where: Path) -> Checkpoint:
        try:
            data = orjson.loads(raw)
            stored = data.pop("checksum", None) if isinstance(data, dict) else None
            if data.get("format") == FORMAT_VERSION and stored != content_checksum(data):
                raise CorruptCheckpoint(
                    f"{where} does not match its own checksum: it was changed or damaged "
                    "outside bulkgene, so it can't be trusted. If you have a backup of it, put it "
                    f"back; otherwise {_RESTART_HINT}")
            if data.get("format") != FORMAT_VERSION:
                raise CorruptCheckpoint(
                    f"{where} was written by an incompatible bulkgene (format "
                    f"{data.get('format')!r}, this one reads {FORMAT_VERSION}); {_RESTART_HINT}")
            return cls(
                fingerprint=str(data["fingerprint"]),
                params=dict(data["params"]),
                inputs=list(data["inputs"]),
                file_lengths=_file_lengths(data["file_lengths"], where),
                done_below=int(data["done_below"]),
                done_above={int(b) for b in data["done_above"]},
                failed={int(b): int(n) for b, n in data["failed"].items()},
                totals={str(k): int(v) for k, v in data["totals"].items()},
                total_batches=data.get("total_batches"),
                updated_at=float(data.get("updated_at", 0.0)),
                run_started_at=float(data.get("run_started_at", 0.0)),
                run_ids_at_start=int(data.get("run_ids_at_start", 0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptCheckpoint(
                f"{where} is damaged and can't be read ({type(exc).__name__}: {exc}). bulkgene "
                "never starts over silently: if you have a backup of it, put it back; otherwise "
                + _RESTART_HINT) from None


_COMMITTED_REPORTS = frozenset({MISSING_NAME, REPLACED_NAME})


def content_checksum(content: dict[str, Any]) -> str:
    """A digest of the checkpoint's content (without its checksum), whatever the formatting."""
    material = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def _file_lengths(raw: dict[str, Any], where: Path) -> dict[str, int]:
    """The checkpoint's file lengths; each name must be a shard or report of the directory.

    cut_back truncates what these name, so a name with a '/' or '..' would let a crafted
    checkpoint truncate any file the user can write, and one like plan.ids bulkgene's own.
    """
    lengths: dict[str, int] = {}
    for name, length in raw.items():
        if not isinstance(name, str) or not (is_shard_name(name) or name in _COMMITTED_REPORTS):
            raise CorruptCheckpoint(
                f"{where} names {name!r} among its files, which is not a shard or report "
                "bulkgene commits: the checkpoint was altered outside bulkgene and is not obeyed. "
                f"Put back a backup of it, or {_RESTART_HINT}")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise CorruptCheckpoint(
                f"{where} records a length of {length!r} for {name}, which is not a byte "
                f"count: the checkpoint was altered outside bulkgene. Put back a backup of it, "
                f"or {_RESTART_HINT}")
        lengths[name] = length
    return lengths


def load(out_dir: Path) -> Checkpoint | None:
    """The directory's checkpoint, None if there is none; CorruptCheckpoint if unreadable."""
    path = out_dir / CHECKPOINT_NAME
    try:
        raw = durable.read_bytes(path)
    except FileNotFoundError:
        return None
    return Checkpoint.from_bytes(raw, path)


def save(out_dir: Path, checkpoint: Checkpoint) -> None:
    """Commit ``checkpoint`` (call only after the data it describes is fsync'd)."""
    durable.write_atomically(out_dir / CHECKPOINT_NAME, checkpoint.to_bytes())


def check_compatible(checkpoint: Checkpoint, params: dict[str, Any],
                     inputs: list[dict[str, str]], fingerprint_now: str) -> None:
    """Refuse to resume a run whose input or output-changing parameters differ."""
    if checkpoint.fingerprint == fingerprint_now:
        return
    changes = [
        f"{name}: was {checkpoint.params.get(name)!r}, now {params.get(name)!r}"
        for name in sorted(set(params) | set(checkpoint.params))
        if checkpoint.params.get(name) != params.get(name)
    ]
    old_digests = [entry["digest"] for entry in checkpoint.inputs]
    new_digests = [entry["digest"] for entry in inputs]
    if old_digests != new_digests:
        old_names = ", ".join(entry["name"] for entry in checkpoint.inputs)
        changes.append(f"input: the ID file(s) differ in content from the checkpoint's "
                       f"({old_names})")
    detail = "; ".join(changes) or "the checkpoint's fingerprint differs"
    raise FingerprintMismatch(
        f"this output directory holds a run with other settings ({detail}). Re-run with the "
        f"original input and options to resume it, or {_RESTART_HINT}")


def cut_back(out_dir: Path, checkpoint: Checkpoint | None, managed: list[Path]) -> None:
    """Truncate every managed file to its committed length (0 if uncommitted)."""
    lengths = checkpoint.file_lengths if checkpoint else {}
    for path in managed:
        committed = lengths.get(path.name, 0)
        size = durable.cut_to(path, committed)
        if size is None:
            if committed:
                raise CorruptCheckpoint(
                    f"{path} is gone, but the checkpoint says {committed} bytes of it were "
                    f"committed; restore it, or {_RESTART_HINT}")
            continue
        if size < committed:
            raise CorruptCheckpoint(
                f"{path} has {size} bytes, fewer than the {committed} the checkpoint committed: "
                f"data was lost outside bulkgene. Restore the file, or {_RESTART_HINT}")
