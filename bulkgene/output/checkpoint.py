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
from pathlib import Path
from typing import Annotated, Any

import msgspec
import orjson

from bulkgene import durable
from bulkgene.errors import CorruptCheckpoint, FingerprintMismatch
from bulkgene.layout import CHECKPOINT_NAME, MISSING_NAME, REPLACED_NAME, is_shard_name

FORMAT_VERSION = 2  # 2: grouped parameters, the server, a checksum
_RESTART_HINT = ("pass --restart to move the old run aside (nothing is deleted) and start over, "
                 "or use another --out directory")
Count = Annotated[int, msgspec.Meta(ge=0)]


def fingerprint(params: dict[str, Any], input_digests: list[str]) -> str:
    """A digest of everything that decides what the output directory contains."""
    material = orjson.dumps({"params": params, "inputs": input_digests},
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(material, digest_size=16).hexdigest()


class InputFile(msgspec.Struct, frozen=True):
    """One input of the run, as given on the command line, and a digest of its content."""

    name: str
    digest: str


class Totals(msgspec.Struct, kw_only=True):
    """What the committed batches add up to, and what the network cost, over all runs."""

    found: Count = 0
    missing: Count = 0
    replaced: Count = 0
    records: Count = 0
    unverified: Count = 0  # TSV without a gene-id column (now refused): IDs neither way
    requests: Count = 0
    retries: Count = 0
    throttled: Count = 0
    bytes: Count = 0
    # missing.tsv's rows by what the gene history says of them (`bulkgene explain`); rows
    # not explained yet are the rest of ``missing``
    missing_discontinued: Count = 0
    missing_replaced: Count = 0
    missing_not_in_history: Count = 0
    missing_refused: Count = 0  # refused by the server and not in the history
    followed: Count = 0  # found through the live successor of a replaced GeneID
    # missing.tsv's rows whose reason is REJECTED_BY_SERVER: never answered, `bulkgene retry`
    refused: Count = 0

    @property
    def ids_done(self) -> int:
        """IDs answered: found, missing or unverified (failed IDs are not progress)."""
        return self.found + self.missing + self.unverified

    def count_written(self, *, found: int, missing: int, replaced: int, records: int,
                      unverified: int, followed: int = 0, missing_discontinued: int = 0,
                      missing_replaced: int = 0, missing_not_in_history: int = 0,
                      missing_refused: int = 0, refused: int = 0) -> None:
        self.found += found
        self.missing += missing
        self.replaced += replaced
        self.records += records
        self.unverified += unverified
        self.followed += followed
        self.missing_discontinued += missing_discontinued
        self.missing_replaced += missing_replaced
        self.missing_not_in_history += missing_not_in_history
        self.missing_refused += missing_refused
        self.refused += refused

    def count_network(self, *, requests: int, retries: int, throttled: int, bytes: int) -> None:
        self.requests += requests
        self.retries += retries
        self.throttled += throttled
        self.bytes += bytes


class Checkpoint(msgspec.Struct, kw_only=True):
    """What has been durably committed in one output directory."""

    fingerprint: str
    params: dict[str, Any]
    inputs: list[InputFile]
    file_lengths: dict[str, int] = msgspec.field(default_factory=dict)  # checked on load
    done_below: Count = 0
    done_above: set[Count] = msgspec.field(default_factory=set)
    failed: dict[Count, Count] = msgspec.field(default_factory=dict)  # batch index -> IDs
    totals: Totals = msgspec.field(default_factory=Totals)
    total_batches: Count | None = None
    updated_at: float = 0.0
    run_started_at: float = 0.0  # the latest run: when it started and how many IDs were
    run_ids_at_start: Count = 0  # done then (status's elapsed time and rate)
    # and its last commit: a report rewritten later (explain) is no part of the run's time
    run_saved_at: float = 0.0
    # the latest run's API root (NetworkSpec.api_root): what to tell a command that would go
    # on with the run from another server (the fingerprint holds only its scheme and host)
    base_url: str = ""
    # reports being replaced by their NAME.rewrite (output/rewrite.py): the lengths in
    # file_lengths are already the new versions'
    rewrites: list[str] = msgspec.field(default_factory=list)
    # the plan's segments this task has taken in (run/growth.py), by key, in order: the
    # fingerprint covers them, as it covers the input
    segments: list[str] = msgspec.field(default_factory=list)
    # the array's claims this task's run belongs to (output/claims.py): a --restart starts
    # the next generation, whose claims know nothing of the runs moved aside
    claims_generation: Count = 0

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
        return self.totals.ids_done

    def to_bytes(self) -> bytes:
        """The checkpoint as JSON with a checksum of its content (a mismatch is damage)."""
        content: dict[str, Any] = {"format": FORMAT_VERSION, **msgspec.to_builtins(self)}
        content["done_above"] = sorted(self.done_above)
        content["failed"] = {str(b): n for b, n in sorted(self.failed.items())}
        content["checksum"] = content_checksum(content)
        return orjson.dumps(content, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_bytes(cls, raw: bytes, where: Path) -> Checkpoint:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _damaged(where, exc) from None
        if not isinstance(data, dict):
            raise _damaged(where, TypeError("not a JSON object"))
        stored = data.pop("checksum", None)
        if data.get("format") == FORMAT_VERSION and stored != content_checksum(data):
            raise CorruptCheckpoint(
                f"{where} does not match its own checksum: it was changed or damaged "
                "outside bulkgene, so it can't be trusted. If you have a backup of it, put it "
                f"back; otherwise {_RESTART_HINT}")
        if data.get("format") != FORMAT_VERSION:
            raise CorruptCheckpoint(
                f"{where} was written by an incompatible bulkgene (format "
                f"{data.get('format')!r}, this one reads {FORMAT_VERSION}); {_RESTART_HINT}")
        data.pop("format")
        try:
            # JSON object keys are strings: the failed batches' indexes become ints here
            failed = data.get("failed", {})
            data["failed"] = {int(index): ids for index, ids in failed.items()}
            state = msgspec.convert(data, cls)
        except (msgspec.ValidationError, ValueError, AttributeError) as exc:
            raise _damaged(where, exc) from None
        _check_file_lengths(state.file_lengths, where)
        if unknown := set(state.rewrites) - _COMMITTED_REPORTS:
            raise CorruptCheckpoint(
                f"{where} names {sorted(unknown)} as reports being rewritten, which are not "
                f"reports bulkgene commits: the checkpoint was altered outside bulkgene. Put "
                f"back a backup of it, or {_RESTART_HINT}")
        return state


def _damaged(where: Path, exc: Exception) -> CorruptCheckpoint:
    return CorruptCheckpoint(
        f"{where} is damaged and can't be read ({type(exc).__name__}: {exc}). bulkgene "
        "never starts over silently: if you have a backup of it, put it back; otherwise "
        + _RESTART_HINT)


_COMMITTED_REPORTS = frozenset({MISSING_NAME, REPLACED_NAME})


def content_checksum(content: dict[str, Any]) -> str:
    """A digest of the checkpoint's content (without its checksum), whatever the formatting."""
    material = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def _check_file_lengths(lengths: dict[str, int], where: Path) -> None:
    """Each name in the checkpoint's file lengths must be a shard or report of the directory,
    each length a byte count.

    cut_back truncates what these name, so a name with a '/' or '..' would let a crafted
    checkpoint truncate any file the user can write, and one like plan.ids bulkgene's own.
    """
    for name, length in lengths.items():
        if not (is_shard_name(name) or name in _COMMITTED_REPORTS):
            raise CorruptCheckpoint(
                f"{where} names {name!r} among its files, which is not a shard or report "
                "bulkgene commits: the checkpoint was altered outside bulkgene and is not obeyed. "
                f"Put back a backup of it, or {_RESTART_HINT}")
        if length < 0:
            raise CorruptCheckpoint(
                f"{where} records a length of {length!r} for {name}, which is not a byte "
                f"count: the checkpoint was altered outside bulkgene. Put back a backup of it, "
                f"or {_RESTART_HINT}")


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


def _setting(value: Any) -> str:
    """A parameter's value in words: an option left out is "not given", never "None"."""
    if value is None:
        return "not given"
    if value == []:
        return "none"
    return repr(value)


def check_compatible(checkpoint: Checkpoint, params: dict[str, Any],
                     inputs: list[InputFile], fingerprint_now: str,
                     advice: str | None = None) -> None:
    """Refuse to resume a run whose input or output-changing parameters differ; ``advice``
    replaces the usual "re-run with the original input and options, or --restart"."""
    if checkpoint.fingerprint == fingerprint_now:
        return
    changes = [
        f"{name}: was {_setting(checkpoint.params.get(name))}, now {_setting(params.get(name))}"
        for name in sorted(set(params) | set(checkpoint.params))
        if checkpoint.params.get(name) != params.get(name)
    ]
    old_digests = [entry.digest for entry in checkpoint.inputs]
    new_digests = [entry.digest for entry in inputs]
    if old_digests != new_digests:
        old_names = ", ".join(entry.name for entry in checkpoint.inputs)
        changes.append(f"input: the ID file(s) differ in content from the checkpoint's "
                       f"({old_names})")
    detail = "; ".join(changes) or "the checkpoint's fingerprint differs"
    advice = advice or (f"Re-run with the original input and options to resume it, or "
                        f"{_RESTART_HINT}")
    raise FingerprintMismatch(
        f"this output directory holds a run with other settings ({detail}). {advice}")


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
