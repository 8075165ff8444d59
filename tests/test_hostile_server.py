"""Nothing a server sends can crash bulkgene: malformed, huge, endless or trickling answers."""

from __future__ import annotations

import asyncio
import gzip
import logging
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import make_config, write_ids
from hostile import HostileServer

import bulkgene
from bulkgene.config import RetryPolicy, Timeouts
from bulkgene.errors import EXIT_FAILED_BATCHES

RETRY = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.02)


def _ids(request: web.Request) -> list[str]:
    return request.match_info["tail"].split("/")[-1].split(",")


def _page(reports: list[bytes], **extra: object) -> bytes:
    head = orjson.dumps(extra)[1:-1]
    return b'{"reports":[' + b",".join(reports) + b"]" + (b"," + head if head else b"") + b"}"


def _report(gene_id: str, query: str) -> bytes:
    return b'{"gene":{"gene_id":"%s"},"query":["%s"]}' % (gene_id.encode(), query.encode())


async def _run(server: HostileServer, tmp_path: Path, **settings: object) -> bulkgene.Summary:
    source = write_ids(tmp_path / "ids.txt", [7157, 672])
    config = make_config([str(source)], tmp_path / "out", base_url=server.base_url,
                         retry=RETRY, requests_per_second=100.0, progress_interval_s=0,
                         **settings)
    return await bulkgene.download(config)


def _bad_page(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


MALFORMED = {
    "superscript-two": _page([_report("²", "7157")], total_count=1),
    "deeply-nested": b'{"reports":[' + b"[" * 5000 + b"]" * 5000 + b'],"total_count":1}',
    "multi-line-bad-utf8": (b'{"reports":[{"gene":{"gene_id":"7157","symbol":"\xff\xfe"},\n'
                            b'"query":["7157"]}],"total_count":1}'),
    "error-envelope-in-a-200": b'{"error":"Internal","code":500,"message":"oops"}',
    "huge-total-count": _page([_report("7157", "7157")], total_count=10**12),
    "stranger": _page([_report("1", "1")], total_count=1),
    "truncated": b'{"reports":[{"gene":{"gene_id":"71',
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_a_malformed_page_is_retried_then_fails_its_batch(tmp_path: Path,
                                                                name: str) -> None:
    async def handler(_request: web.Request) -> web.Response:
        return _bad_page(MALFORMED[name])

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == EXIT_FAILED_BATCHES and summary.found == 0
    assert server.requests == RETRY.max_attempts
    shards = list((tmp_path / "out").glob("shard-*"))
    assert all(shard.stat().st_size == 0 for shard in shards), "nothing invalid is written"


async def test_an_endless_page_chain_is_cut_at_what_the_ids_can_need(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        first = "page_token" not in request.query
        extra: dict[str, object] = {"next_page_token": f"t{request.query.get('page_token', '')}x"}
        if first:
            extra["total_count"] = 2
        ids = _ids(request)
        return _bad_page(_page([_report(ids[0], ids[0])] if first else [], **extra))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == EXIT_FAILED_BATCHES
    # 2 IDs fit one page: at most 2 pages per chain, chains bounded by max_attempts
    assert server.requests <= 2 * RETRY.max_attempts


async def test_an_oversized_or_bomb_answer_is_cut_off_and_retried(tmp_path: Path) -> None:
    bomb = gzip.compress(b" " * (64 << 20), compresslevel=1)  # 64 MiB of spaces in ~290 KB

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path, max_response_bytes=1 << 20)
    assert summary.exit_code == EXIT_FAILED_BATCHES
    assert server.requests == RETRY.max_attempts


async def test_a_trickling_body_is_cut_by_the_attempt_timeout(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for byte in _page([_report("7157", "7157")], total_count=1):
            await response.write(bytes([byte]))
            await asyncio.sleep(0.05)
        return response

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path,
                             timeouts=Timeouts(read_stall_s=5, attempt_s=0.15))
    assert summary.exit_code == EXIT_FAILED_BATCHES and summary.found == 0
    assert server.requests == RETRY.max_attempts


async def test_an_absurd_server_rate_limit_is_refused_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: web.Request) -> web.Response:
        ids = _ids(request)
        return web.Response(body=_page([_report(i, i) for i in ids], total_count=len(ids)),
                            content_type="application/json",
                            headers={"X-RateLimit-Limit": "0.01", "X-RateLimit-Remaining": "0"})

    with caplog.at_level(logging.WARNING, logger="bulkgene"), HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == 0 and summary.found == 2
    assert "X-RateLimit-Limit" in caplog.text


async def test_a_token_the_server_keeps_refusing_restarts_the_chain_from_page_1(
        tmp_path: Path) -> None:
    seen: list[str] = []
    expired = {"t1"}

    async def handler(request: web.Request) -> web.Response:
        token = request.query.get("page_token")
        seen.append(token or "page 1")
        if token is None:
            return _bad_page(_page([_report("7157", "7157")], total_count=2,
                                   next_page_token=f"t{len(seen)}"))
        if token in expired:  # the first chain's token: refused every time, as NCBI does
            return web.Response(status=500, text='{"error":"Internal Server Error"}\n')
        return _bad_page(_page([_report("672", "672")]))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path, page_size=1)
    assert summary.exit_code == 0 and summary.found == 2
    assert seen == ["page 1", "t1", "t1", "page 1", "t4"]


async def test_a_server_echoing_the_key_gets_it_into_no_log_or_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bulkgene.config import Secret

    key = "sentinel-key-echoed-back"

    async def handler(request: web.Request) -> web.Response:
        echoed = request.headers.get("api-key", "")
        if request.query.get("page_token") is None and "7157" in request.path:
            return web.Response(status=400, text=f'{{"message":"bad key {echoed}"}}\n',
                                headers={"Ncbi-Phid": echoed})
        return _bad_page(b'{"error":"key ' + echoed.encode() + b'"}')

    with caplog.at_level(logging.DEBUG, logger="bulkgene"), HostileServer(handler) as server, \
            pytest.raises(bulkgene.BulkgeneError) as caught:
        await _run(server, tmp_path, api_key=Secret(key))
    assert key not in str(caught.value) and key not in caplog.text
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("name", ["bad-utf8-single-line", "two-genes-for-one-id"])
async def test_reports_no_tool_could_read_or_trust_are_invalid(tmp_path: Path,
                                                                name: str) -> None:
    bodies = {
        "bad-utf8-single-line": (b'{"reports":[{"gene":{"gene_id":"7157","symbol":"\xff\xfe"},'
                                 b'"query":["7157"]}],"total_count":1}'),
        "two-genes-for-one-id": _page([_report("7157", "7157"), _report("672", "7157")],
                                      total_count=2),
    }

    async def handler(_request: web.Request) -> web.Response:
        return _bad_page(bodies[name])

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == EXIT_FAILED_BATCHES and summary.found == 0


async def test_another_gene_for_every_id_without_replaced_warning_is_invalid(
        tmp_path: Path) -> None:
    """40/40 'replaced' was accepted: NCBI marks every replacement with REPLACED_GENE_ID."""
    async def handler(request: web.Request) -> web.Response:
        ids = _ids(request)
        return _bad_page(_page([_report(str(int(i) + 1), i) for i in ids], total_count=len(ids)))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == EXIT_FAILED_BATCHES
    assert summary.found == 0 and summary.replaced == 0 and summary.failed == 2
    assert (tmp_path / "out" / "replaced.tsv").read_text().count("\n") <= 1  # the header only


@pytest.mark.parametrize("warning", [
    {"gene_warning_code": "REPLACED_GENE_ID"},
    {"gene_warning_code": "REPLACED_GENE_ID", "replaced_id": {"requested": "7157",
                                                              "returned": "99"}},
])
async def test_a_marked_replacement_is_kept(tmp_path: Path, warning: dict[str, object]) -> None:
    async def handler(request: web.Request) -> web.Response:
        replaced = (b'{"gene":{"gene_id":"99"},"query":["7157"],"warnings":'
                    + orjson.dumps([warning]) + b"}")
        return _bad_page(_page([replaced, _report("672", "672")], total_count=2))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == 0 and summary.found == 2 and summary.replaced == 1


async def test_a_replacement_warning_naming_other_ids_does_not_vouch(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.Response:
        warning = {"gene_warning_code": "REPLACED_GENE_ID",
                   "replaced_id": {"requested": "1", "returned": "99"}}
        replaced = (b'{"gene":{"gene_id":"99"},"query":["7157"],"warnings":'
                    + orjson.dumps([warning]) + b"}")
        return _bad_page(_page([replaced, _report("672", "672")], total_count=2))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path)
    assert summary.exit_code == EXIT_FAILED_BATCHES and summary.replaced == 0


@pytest.mark.parametrize("spelling", ["all-escaped", "mixed-case-hex", "half-escaped"])
async def test_a_key_echoed_json_escaped_in_report_data_is_masked_in_the_shards(
        tmp_path: Path, spelling: str) -> None:
    """Escapes hid the key from a byte search, and every JSON reader decodes it back."""
    from bulkgene.config import Secret

    key = "sentinel-key-echoed-back"
    escaped = {
        "all-escaped": "".join(f"\\u{ord(c):04x}" for c in key),
        "mixed-case-hex": "".join(f"\\u{ord(c):04X}" if i % 2 else f"\\u{ord(c):04x}"
                                  for i, c in enumerate(key)),
        "half-escaped": key[:8] + "".join(f"\\u{ord(c):04x}" for c in key[8:]),
    }[spelling].encode()

    async def handler(request: web.Request) -> web.Response:
        echo = (b'{"gene":{"gene_id":"7157","description":"key ' + escaped
                + b' here"},"query":["7157"]}')
        return _bad_page(_page([echo, _report("672", "672")], total_count=2))

    with HostileServer(handler) as server:
        summary = await _run(server, tmp_path, api_key=Secret(key))
    assert summary.exit_code == 0 and summary.found == 2
    written = [orjson.loads(line) for shard in sorted((tmp_path / "out").glob("shard-*"))
               for line in shard.read_bytes().splitlines()]
    assert len(written) == 2
    for record in written:
        assert key.encode() not in orjson.dumps(record)  # decoded, as every reader sees it
    (echoed,) = [r for r in written if r["gene"]["gene_id"] == "7157"]
    assert echoed["gene"]["description"] == "key *** here"


@pytest.mark.parametrize("key", ["a/b\"c\\d-key-0123", "k\U0001f511-emoji-key"])
def test_every_json_spelling_of_a_key_decodes_to_the_mask(key: str) -> None:
    from bulkgene.net.keymask import mask_echoes

    spellings = [orjson.dumps(key), orjson.dumps(key).replace(b"/", b"\\/"),
                 b'"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else
                                f"\\u{0xD800 + ((ord(c) - 0x10000) >> 10):04x}"
                                f"\\u{0xDC00 + ((ord(c) - 0x10000) & 0x3FF):04X}"
                                for c in key).encode() + b'"']
    for spelling in spellings:
        assert orjson.loads(spelling) == key  # each really is the key, to a JSON reader
        assert orjson.loads(mask_echoes(b'{"x":' + spelling + b"}", key)) == {"x": "***"}


def test_masking_in_windows_finds_what_a_whole_body_search_finds() -> None:
    """Escapes everywhere, echoes at the edges and between them: same result as one regex."""
    import random

    from bulkgene.net.keymask import _echo, mask_echoes

    key = "a/b-key-0123456789"
    rng = random.Random(7)
    spellings = [key.encode(), orjson.dumps(key)[1:-1].replace(b"/", b"\\/"),
                 "".join(f"\\u{ord(c):04x}" for c in key).encode()]
    for _ in range(200):
        parts = []
        for _ in range(rng.randrange(1, 30)):
            parts.append(rng.choice([b"x" * rng.randrange(0, 300), b"\\u00e9", b"\\/", b'\\"',
                                     rng.choice(spellings)]))
        body = b"".join(parts)
        assert mask_echoes(body, key) == _echo(key).sub(b"***", body.replace(key.encode(),
                                                                             b"***"))
