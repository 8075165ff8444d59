"""The CPU baseline: a minimal aiohttp + orjson fetch-and-append loop, no checkpoint, no checks.

    python -m bench.minimal_client BASE_URL IDS_FILE OUT_FILE [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import orjson


async def main(base_url: str, ids_file: str, out_file: str, concurrency: int) -> None:
    with open(ids_file) as handle:  # noqa: ASYNC230 - the baseline stays as plain as a user would write it
        ids = [line.strip() for line in handle if line.strip()]
    batches: asyncio.Queue[list[str] | None] = asyncio.Queue()
    for start in range(0, len(ids), 1000):
        batches.put_nowait(ids[start:start + 1000])
    for _ in range(concurrency):
        batches.put_nowait(None)
    with open(out_file, "ab") as out:  # noqa: ASYNC230 - ditto: blocking appends, like bulkgene's writer thread
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                while (batch := await batches.get()) is not None:
                    token = None
                    while True:
                        params = {"page_size": "1000", **({"page_token": token} if token else {})}
                        async with session.get(f"{base_url}/gene/id/{','.join(batch)}",
                                               params=params) as response:
                            page = orjson.loads(await response.read())
                        out.write(b"".join(orjson.dumps(r) + b"\n" for r in page.get("reports", [])))
                        token = page.get("next_page_token")
                        if not token:
                            break

            await asyncio.gather(*(worker() for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3],
                     int(sys.argv[4]) if len(sys.argv) > 4 else 8))
