"""The floor: the least any scaler could do — the same blocking query, then one patch at once.

Does I/O; runs as its own process (``python -m bench.floor ...``) so it is measured exactly like
the daemon. One ``aiohttp.ClientSession`` (the same HTTP stack the daemon uses underneath
py-consul and kubernetes_asyncio) does ``GET /v1/health/service/<s>?index=&wait=``, reads the
whole body (the bytes must cross the wire), finds the watched server's check status in it by a
byte search (no JSON decoding), and whenever that status changed sends one JSON merge patch of
``spec.replicas`` (alternating between two values, so every patch is a change). Other servers
changing (the churn rows) only cost it the read and the search. No policy, no logging, no
validation, no Kubernetes client library, no resourceVersion precondition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl

import aiohttp

__all__ = ["floor_loop"]


def status_of(body: bytes, check: bytes) -> bytes | None:
    """The ``Status`` of the check whose ``"CheckID":"<id>"`` is ``check``, by byte search."""
    at = body.find(check)
    if at < 0:
        return None
    start = body.find(b'"Status":"', at) + len(b'"Status":"')
    return body[start : body.find(b'"', start)]


async def floor_loop(
    *,
    consul: str,
    service: str,
    scale_url: str,
    token: str,
    replicas: tuple[int, int],
    cafile: str | None,
    server: str,
    wait: str,
) -> None:
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else False
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
    bodies = [f'{{"spec":{{"replicas":{r}}}}}'.encode() for r in replicas]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{consul}/v1/health/service/{service}"
        check = f'"CheckID":"service:{server}"'.encode()
        index, flips, last = "0", 0, None
        while True:
            params = {"index": index, "wait": wait} if index != "0" else {}
            # Uncompressed, as the daemon asks by default (consul.compress: false).
            async with session.get(url, params=params, headers={"Accept-Encoding": "identity"}) as response:
                body = await response.read()
                new = response.headers.get("X-Consul-Index", "0")
            status = status_of(body, check)
            if index == "0":
                print("ready", flush=True)  # the harness waits for this line before the first write
            elif new != index and status != last:
                async with session.patch(scale_url, data=bodies[flips % 2], headers=headers, ssl=context) as patched:
                    await patched.read()
                flips += 1
            index, last = new, status


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--consul", required=True)
    parser.add_argument("--service", default="bolina")
    parser.add_argument("--scale-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--replicas", default="9,10", help="the two values the patches alternate between, first first")
    parser.add_argument("--cafile")
    parser.add_argument("--server", default="bolina-0", help="the server whose status changes are reacted to")
    parser.add_argument("--wait", default="30s", help="the blocking-query wait (the daemon's consul.wait)")
    args = parser.parse_args()
    low, high = (int(v) for v in args.replicas.split(","))

    async def run() -> None:
        task = asyncio.ensure_future(
            floor_loop(
                consul=args.consul,
                service=args.service,
                scale_url=args.scale_url,
                token=args.token,
                replicas=(low, high),
                cafile=args.cafile,
                server=args.server,
                wait=args.wait,
            )
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
