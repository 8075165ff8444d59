"""The emulator's ``/gene/DATA/gene_history.gz``: its universe's gone GeneIDs, as NCBI's FTP file has them.

Each GeneID up to ``EmulatorConfig.history_max_id`` whose fate is discontinued or replaced
(and every ID the universe names explicitly) gets the rows ``GeneUniverse.history`` gives:
``-`` for a discontinued one, its successor for a replaced one, two-step chains through a
middle ID for a share of both. Rows are grouped by tax_id, then GeneID, as NCBI's seem to be
(docs/ncbi-gene-history.md); nothing should rely on that. IDs above ``history_max_id`` are
not in the file, as IDs newer than a day's file would not be.

The file is served as NCBI's FTP host serves it over HTTPS, as far as that is known:
``Content-Length``, ``Last-Modified``, an ``ETag``, ``Range`` (206, ``If-Range``, 416) and
conditional requests (304 on ``If-None-Match`` / ``If-Modified-Since``); each can be turned
off, since none was ever recorded. Faults: ``cut`` (the connection closes halfway through
the promised body), ``truncated_file`` (a clean answer holding half a gzip file) and
``not_gzip`` (an HTML page), for every answer or the first ``history_fault_answers``. Each
answer is logged in ``EmulatorState.history_requests``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from email.utils import formatdate, parsedate_to_datetime

from aiohttp import web

from bulkgene.testing.state import FRONT_END_KEY, STATE_KEY, HistoryRequest
from bulkgene.testing.universe import GeneUniverse, HistoryStep, mix

HISTORY_PATH = "/gene/DATA/gene_history.gz"
HISTORY_FAULTS = ("cut", "truncated_file", "not_gzip")
HEADER = b"#tax_id\tGeneID\tDiscontinued_GeneID\tDiscontinued_Symbol\tDiscontinue_Date\n"
# the file's date: Last-Modified moves a day with each new generation of the file
_FIRST_MODIFIED_S = 1_796_112_000  # 2026-12-01 06:40 UTC
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_NOT_GZIP = (b"<!DOCTYPE html><html><head><title>Service unavailable</title></head><body>"
             b"<p>The FTP service is temporarily unavailable.</p></body></html>\n")


def steps(universe: GeneUniverse, max_id: int) -> list[HistoryStep]:
    """Every row of the universe's history up to ``max_id`` (and its explicit IDs)."""
    origins: set[int] = set(universe.discontinued) | set(universe.replaced)
    gone_per_mille = (universe.unknown_per_mille + universe.discontinued_per_mille
                      + universe.replaced_per_mille)
    seed = universe.seed ^ 0x5EED
    # the fate roll of GeneUniverse.fate, inline: only IDs it may call gone are asked
    origins.update(gene_id for gene_id in range(1, min(max_id, universe.max_known_id) + 1)
                   if mix(gene_id ^ seed) % 1000 < gone_per_mille)
    rows: dict[int, HistoryStep] = {}
    for origin in origins:
        for step in universe.history(origin):
            rows[step.gene_id] = step
    return list(rows.values())


def render(universe: GeneUniverse, rows: list[HistoryStep], generation: int = 0) -> bytes:
    """The rows as NCBI's tab-separated text, header first, grouped by tax_id."""
    lines = [HEADER]
    if generation:
        lines.append(b"# generation %d\n" % generation)  # a new day's file differs
    keyed = sorted(((universe.tax_id(step.gene_id), step.gene_id), step) for step in rows)
    for (tax_id, gene_id), step in keyed:
        successor = b"-" if step.successor is None else b"%d" % step.successor
        lines.append(b"%d\t%s\t%d\t%s\t%d\n" % (tax_id, successor, gene_id,
                                                universe.symbol(gene_id).encode(), step.date))
    return b"".join(lines)


# made once per universe, range and generation: tests start many emulators of one universe
_BODIES: dict[tuple[object, ...], bytes] = {}
_KEPT_BODIES = 8


def history_gz(universe: GeneUniverse, max_id: int, generation: int = 0) -> bytes:
    """The gzipped file of ``universe`` up to ``max_id``."""
    key = (universe.seed, universe.unknown_per_mille, universe.discontinued_per_mille,
           universe.replaced_per_mille, universe.max_known_id, universe.unknown,
           universe.discontinued, tuple(sorted(universe.replaced.items())), max_id, generation)
    body = _BODIES.get(key)
    if body is None:
        text = render(universe, steps(universe, max_id), generation)
        body = gzip.compress(text, compresslevel=6, mtime=0)
        if len(_BODIES) >= _KEPT_BODIES:
            _BODIES.clear()
        _BODIES[key] = body
    return body


def _validators(body: bytes, generation: int) -> tuple[str, str, float]:
    """(ETag, Last-Modified, its time) of one generation of the file."""
    etag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
    modified_s = _FIRST_MODIFIED_S + 86400 * generation
    return etag, formatdate(modified_s, usegmt=True), modified_s


def _not_modified(request: web.Request, etag: str | None, modified_s: float) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:  # it takes precedence over If-Modified-Since (RFC 9110)
        return etag is not None and etag in (tag.strip() for tag in if_none_match.split(","))
    since = request.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        return parsedate_to_datetime(since).timestamp() >= modified_s
    except (TypeError, ValueError):
        return False


async def gene_history(request: web.Request) -> web.StreamResponse:
    """``GET /gene/DATA/gene_history.gz``, with its validators, ranges and faults."""
    state = request.app[STATE_KEY]
    config = state.config
    request[FRONT_END_KEY] = True  # an FTP host's answer: no Datasets headers on it
    body = history_gz(state.universe, config.history_max_id, state.history_generation)
    etag, last_modified, modified_s = _validators(body, state.history_generation)
    fault = state.history_fault()
    if fault == "truncated_file":
        body = body[: len(body) // 2]
    headers = {"Last-Modified": last_modified}
    if config.history_etag:
        headers["ETag"] = etag
    if config.history_ranges:
        headers["Accept-Ranges"] = "bytes"
    shown_etag = etag if config.history_etag else None

    def log(status: int, sent: int) -> None:
        state.log_history(HistoryRequest(
            request.headers.get("Range"), request.headers.get("If-Range"),
            request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since"),
            status, sent, fault))

    if config.history_conditional and _not_modified(request, shown_etag, modified_s):
        log(304, 0)
        return web.Response(status=304, headers=headers)
    if fault == "not_gzip":
        log(200, len(_NOT_GZIP))
        return web.Response(status=200, body=_NOT_GZIP, content_type="text/html")
    status, start, end = 200, 0, len(body)
    wanted = _RANGE.fullmatch(request.headers.get("Range", "").strip())
    if_range = request.headers.get("If-Range")
    if config.history_ranges and wanted and if_range in (None, shown_etag, last_modified):
        start = int(wanted.group(1))
        end = min(len(body), int(wanted.group(2)) + 1) if wanted.group(2) else len(body)
        if start >= len(body) or start >= end:
            log(416, 0)
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(body)}"
    piece = memoryview(body)[start:end]
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/x-gzip"
    response.content_length = len(piece)
    await response.prepare(request)
    stop_at = len(piece) // 2 if fault == "cut" else len(piece)
    sent = 0
    step = config.history_chunk_bytes
    while sent < stop_at:
        chunk = piece[sent:min(stop_at, sent + step)]
        await response.write(bytes(chunk))
        sent += len(chunk)
        if config.history_chunk_delay_s > 0:
            await asyncio.sleep(config.history_chunk_delay_s)
    log(status, sent)
    if fault == "cut":
        assert request.transport is not None
        request.transport.close()
        return response
    await response.write_eof()
    return response
