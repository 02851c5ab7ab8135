"""The HTTP side every fake shares: an aiohttp application on ``127.0.0.1``, on a free port.

Does I/O (a listening socket). A fake subclasses ``LocalServer``, builds its application in
``build_app`` and releases its own resources in ``on_stop``; ``async with`` starts and stops it.
"""

from __future__ import annotations

import asyncio
import ssl
from types import TracebackType
from typing import Self

from aiohttp import web

__all__ = ["LocalServer"]


class LocalServer:
    """Serves ``build_app()`` on 127.0.0.1: ``async with Fake() as fake: fake.url``."""

    url: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None

    async def build_app(self) -> web.Application:
        raise NotImplementedError

    async def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to serve https with (None: plain http)."""
        return None

    async def on_stop(self) -> None:
        """Release what the fake holds besides the server (timers, waiters, files)."""

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); return the base URL, e.g. ``http://127.0.0.1:PORT``."""
        app = await self.build_app()
        context = await self.ssl_context()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        await self.on_stop()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
