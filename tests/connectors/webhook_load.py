"""Load generator for the webhook, run as a SECOND PROCESS by test_webhook.py.

    python -m tests.connectors.webhook_load URL --token-env VAR --posts 2000 --batch 100

Prints one JSON line: {"posts", "accepted", "seconds", "posts_per_s", "statuses"}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter

import aiohttp
import orjson

from rules.post import format_rfc3339_ms

BASE_MS = 1_795_000_000_000


def _post(i: int, run: str) -> dict[str, object]:
    return {
        "id": f"load:{run}:{i}",
        "source": "webhook",
        "text": f"load test post {i}: acme burger recall?",
        "created_at": format_rfc3339_ms(BASE_MS + i),
        "author": {"id": f"u{i % 97}", "followers": i % 5000},
    }


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token-env", required=True)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--run", default="r")
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        print("loopback only", file=sys.stderr)
        return 2
    headers = {
        "Authorization": f"Bearer {os.environ[args.token_env]}",
        "Content-Type": "application/json",
    }
    bodies = [
        orjson.dumps([_post(i, args.run) for i in range(s, min(s + args.batch, args.posts))])
        for s in range(0, args.posts, args.batch)
    ]
    statuses: Counter[int] = Counter()
    accepted = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        while not queue.empty():
            body = queue.get_nowait()
            async with session.post(args.url, data=body, headers=headers) as resp:
                statuses[resp.status] += 1
                if resp.status == 202:
                    accepted += (await resp.json())["accepted"]

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(args.concurrency)))
    seconds = time.perf_counter() - started
    result = {
        "posts": args.posts,
        "accepted": accepted,
        "seconds": round(seconds, 3),
        "posts_per_s": round(accepted / seconds, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
