"""The console for people: logging through the progress terminal, the end-of-run account, the key."""

from __future__ import annotations

import errno
import logging
import os
import shlex
import stat
import sys
from pathlib import Path

import click
import orjson

from bulkgene.config import Secret
from bulkgene.errors import EXIT_FAILED_BATCHES, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from bulkgene.model import Summary

log = logging.getLogger("bulkgene")
_TRACE = 5  # net/client.py's TRACE (not imported: it loads aiohttp): -vv, every request


def print_out(text: str, nl: bool = True) -> None:
    """``text`` to standard output; a full disk or a failing device there is a clear error
    (exit 1), not a traceback, and nothing more is tried on that stream."""
    try:
        click.echo(text, nl=nl)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # click ends quietly on a closed pipe (| head)
        try:  # the unwritten rest would fail again when Python flushes at exit
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test runner's buffer): nothing is flushed at exit
        raise click.ClickException(
            f"cannot write to standard output: {exc.strerror or exc}; if it is redirected "
            "to a file, free some space there (or write it elsewhere) and run it again") from None


def configure_logging(verbose: int, quiet: int, handler: logging.Handler | None = None) -> None:
    level = logging.INFO + 10 * (quiet - verbose)
    handler = handler or logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bulkgene: %(message)s"))
    root = logging.getLogger("bulkgene")
    root.handlers[:] = [handler]
    root.setLevel(max(_TRACE, min(level, logging.CRITICAL)))
    root.propagate = False


def report_end(summary: Summary, args: list[str] | None = None) -> None:
    """The end-of-run account on stderr: what, where, and the next step if there is one.

    ``args`` is the command line to suggest for a re-run (default: this process's own).
    """
    where = Path(summary.out_dir)
    if account_shown():
        click.echo(f"bulkgene: {summary.line()}", err=True)
    lines = [f"  {summary.records} records in {where}/shard-*; "
             f"{summary.missing} missing -> {where}/missing.tsv; "
             f"{summary.replaced} replaced -> {where}/replaced.tsv; "
             f"{summary.rejected} rejected lines -> {_rejects_file(where)}"]
    command = resume_command(sys.argv[1:] if args is None else args)
    if summary.exit_code == EXIT_FAILED_BATCHES:
        lines.append(f"{summary.batches_failed} batch(es) ({summary.failed} GeneIDs) failed "
                     f"after every retry; run the same command again to retry exactly those:\n"
                     f"  {command}")
    elif summary.exit_code == EXIT_INTERRUPTED:
        lines.append(f"interrupted with {summary.pending} GeneIDs to go; everything committed "
                     f"is safe. Resume with:\n  {command}")
    elif summary.exit_code == EXIT_OK and where.name.startswith("task-"):
        lines.append(f"done with this task. When every task of the array has finished, check "
                     f"them all with: bulkgene verify {where.parent}")
    elif summary.exit_code == EXIT_OK:
        lines.append(f"done. Check it with: bulkgene verify {where}")
    if summary.refused:
        lines.append(f"{summary.refused} GeneIDs were refused by the server "
                     "(REJECTED_BY_SERVER in missing.tsv): they were never answered and may "
                     "well be live genes (NCBI refuses a whole request for one GeneID it calls "
                     "invalid, and has answered such IDs another day). Fetch them again with: "
                     f"bulkgene retry {shlex.quote(summary.run_dir)}"
                     f"{_base_url_option(sys.argv[1:] if args is None else args)}")
    if summary.task_count > 1 and summary.complete and (merged := _merged(where.parent)):
        lines.append(merged)
    emit = log.warning if summary.exit_code or summary.refused else log.info
    for line in lines:
        emit("%s", line)


def _base_url_option(args: list[str]) -> str:
    """`` --base-url URL`` if the command line gave one (retry must ask the run's own
    server: another is refused), else nothing (the default, or BULKGENE_BASE_URL)."""
    url = None
    for index, arg in enumerate(args):
        if arg == "--base-url" and index + 1 < len(args):
            url = args[index + 1]
        elif arg.startswith("--base-url="):
            url = arg.removeprefix("--base-url=")
    return f" --base-url {shlex.quote(url)}" if url else ""


def account_shown() -> bool:
    """Whether a command's account line is printed: also with -q, not with -qq (errors only)."""
    return log.isEnabledFor(logging.WARNING)


def _merged(out_dir: Path) -> str | None:
    """The account of a whole array its last task has just merged, if it is current."""
    from bulkgene.results import merge

    if not merge.merged_is_current(out_dir):
        return None
    try:
        summary = orjson.loads((out_dir / "summary.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return (f"{merge.summary_line(summary)}; merged into {out_dir}/missing.tsv, replaced.tsv "
            "and summary.json")


def _rejects_file(work_dir: Path) -> Path:
    """rejects.tsv is beside the input's plan: in the task's directory, or an array's DIR."""
    own = work_dir / "rejects.tsv"
    return own if own.exists() or not (work_dir.parent / "rejects.tsv").exists() \
        else work_dir.parent / "rejects.tsv"


def resume_command(args: list[str]) -> str:
    """The command line to run again: the value of any --api-key hidden, and no --restart
    (running that again would start over instead of resuming)."""
    shown: list[str] = []
    hide_next = False
    for arg in args:
        if arg == "--restart":
            continue
        if hide_next:
            shown.append("<KEY>")
            hide_next = False
        elif arg == "--api-key":
            shown.append(arg)
            hide_next = True
        elif arg.startswith("--api-key="):
            shown.append("--api-key=<KEY>")
        else:
            shown.append(shlex.quote(arg))
    return "bulkgene " + " ".join(shown)


_MAX_KEY_FILE_BYTES = 4096  # a key is 36 characters; a comment or two at most besides


def _read_key_file(path: Path) -> bytes:
    """A key file's bytes, read as a small file: a device (``/dev/zero``), a directory or a
    huge file is refused after reading at most a few KiB (reading /dev/zero whole took 24 GB)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):  # a FIFO: <(pass show ncbi)
            raise ConfigError(f"--api-key-file {path} is not a regular file: give the file "
                              "that holds your NCBI API key")
        os.set_blocking(fd, True)
        raw = b""
        while len(raw) <= _MAX_KEY_FILE_BYTES and (block := os.read(fd, 1 << 12)):
            raw += block
    except OSError as exc:
        raise ConfigError(f"cannot read --api-key-file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(f"--api-key-file {path} is too big to be a key file (over "
                          f"{_MAX_KEY_FILE_BYTES} bytes): put only your NCBI API key in it")
    return raw


def refuse_key_file_input(inputs: tuple[str, ...], api_key_file: Path | None,
                          taxa_file: Path | None = None) -> None:
    """An INPUT (or --taxa-file) that is the --api-key-file itself (``fetch *.txt
    --api-key-file key.txt``) would be read as a GeneID list, its key a rejected line (or a
    taxon name sent to the server): refused before anything."""
    if api_key_file is None:
        return
    try:
        key = os.stat(api_key_file)
    except OSError:
        return  # reading the key says what is wrong with it
    named = [(f"INPUT {name}", name) for name in inputs]
    if taxa_file is not None:
        named.append((f"--taxa-file {taxa_file}", str(taxa_file)))
    for what, name in named:
        try:
            same = name != "-" and os.path.samestat(os.stat(name), key)
        except OSError:
            continue  # reading the input says what is wrong with it
        if same:
            raise ConfigError(
                f"{what} is your --api-key-file: bulkgene would read your API key as a list "
                "of IDs (did a glob such as *.txt take it in?). Leave it out, or keep the key "
                "file in another directory")


def read_api_key(api_key: str | None, api_key_file: Path | None) -> Secret | None:
    """--api-key, else --api-key-file, else $NCBI_API_KEY; never echoed anywhere."""
    if api_key:
        return Secret(api_key.strip())
    if api_key_file is not None:
        raw = _read_key_file(api_key_file)
        # editors on Windows save a BOM, and every editor a final newline: neither is the key
        text = raw.decode("utf-8-sig", "replace").strip()
        if not text:
            raise ConfigError(f"--api-key-file {api_key_file} is empty: put your NCBI API key "
                              "on its first line (from your NCBI account settings page)")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            raise ConfigError(f"--api-key-file {api_key_file} holds {len(lines)} lines: put "
                              "only the key in it, so that no other line is sent by mistake")
        return Secret(lines[0])
    from_env = os.environ.get("NCBI_API_KEY", "").strip()
    return Secret(from_env) if from_env else None
