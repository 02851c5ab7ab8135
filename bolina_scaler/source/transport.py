"""The HTTP side of the Consul source: one GET of ``/v1/health/service/<service>``.

Does I/O, through py-consul (the chosen client library: it builds the aiohttp session, the TLS
context and the URLs). Its ``health.service`` wrapper hides what the scaler needs, so the
transport's ``http.get`` is called with our own callback, which receives the status code, the
headers and the raw bytes. py-consul traps worked around here (py-consul 1.8):

* building the client creates an aiohttp session: it must happen inside the running loop;
* its session has aiohttp's total timeout of 300 s, which kills a 5 min blocking query answered
  late by Consul's jitter (up to wait/16): ``read_timeout`` (> wait × 17/16) is set on the session
  and again on each request;
* it reads ``CONSUL_HTTP_TOKEN`` and lets it override the ``token=`` argument: it gets no token
  and ``X-Consul-Token`` is sent here, so ``consul.token_file`` wins (``ConsulConfig.token``);
* host, port, scheme and verify are always passed, so ``CONSUL_HTTP_ADDR``/``_SSL``/``_SSL_VERIFY``
  never override the config; it ignores ``CONSUL_CACERT``, so ``ca_file`` goes in as ``verify``;
* ``health.service()`` returns only (index, stdlib-decoded data): no KnownLeader or LastContact,
  no stale/consistent, and a ``ConsulException`` for a missing index.

Memory stays bounded whatever the other end sends: a body is read up to
``consul.max_answer_bytes`` (derived from ``policy.max_replicas``) and no further, and aiohttp's
own decompression is off (it inflates whatever arrives, asked for or not): a ``gzip`` or
``deflate`` body is inflated here, chunk by chunk, never past the same limit. A 1 MB gzip
body that inflates to 1 GB costs one limit's worth of memory and a failed query.

Every failure to get an answer (refused, reset, timeout, unreadable token, too large) becomes a
``Failure``.
"""

from __future__ import annotations

import urllib.parse
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
import consul
import consul.aio

from bolina_scaler.config import ConsulConfig, answer_limit
from bolina_scaler.core.model import ConsulIndex
from bolina_scaler.source.answer import Failure, Response
from bolina_scaler.source.wire import go_duration

__all__ = ["NON_BLOCKING_TIMEOUT", "HealthTransport"]

NON_BLOCKING_TIMEOUT = 30.0
"""Read timeout of a query without ``index`` (it never blocks; 10,000 entries arrive well within)."""


class _StreamingHTTPClient(consul.aio.HTTPClient):  # type: ignore[misc]  # py-consul ships no types
    """py-consul's aiohttp transport, except that a raw GET's body is read into one growing buffer.

    aiohttp's ``read()`` keeps every chunk of an answer until the last one has arrived and then
    joins them: two copies of a large answer at the peak. Appending each chunk to a
    ``bytearray`` as it arrives holds one (glibc grows a large buffer in place), and msgspec and
    orjson decode a ``bytearray`` as they decode ``bytes``. The buffer never grows past
    ``max_body`` (decompressed). Other requests are py-consul's own.
    """

    max_body: int = answer_limit(1)

    async def _request(
        self,
        callback: Callable[[consul.base.Response], Any],
        method: str,
        uri: str,
        headers: dict[str, str] | None,
        data: Any = None,
        connections_timeout: float | None = None,
        raw: bool = False,
    ) -> Any:
        if not raw or method != "GET" or data is not None:
            return await super()._request(callback, method, uri, headers, data, connections_timeout, raw)
        timeout = aiohttp.ClientTimeout(total=connections_timeout) if connections_timeout else None
        limit = self.max_body
        async with self._session.get(uri, headers=headers, timeout=timeout, auto_decompress=False) as response:
            inflate = _inflater(response.headers.get("Content-Encoding", ""))
            if response.content_length is not None and response.content_length > limit:
                raise Failure(_too_large(limit, f"Content-Length {response.content_length}"))
            body = bytearray()
            async for chunk in response.content.iter_any():
                if inflate is None:
                    body += chunk
                else:
                    _inflate_into(body, inflate, chunk, limit)
                if len(body) > limit:
                    raise Failure(_too_large(limit, "the body"))
            if inflate is not None and not inflate.eof:
                raise Failure("consul answer malformed: the compressed body ends early")
            if response.status == 599:  # as py-consul's own transport does
                raise consul.Timeout
            return callback(consul.base.Response(response.status, response.headers, body))


def _inflater(encoding: str) -> Any:
    """A zlib decompressor for the answer's ``Content-Encoding``, None for identity."""
    coding = encoding.strip().lower()
    if coding in {"", "identity"}:
        return None
    if coding in {"gzip", "x-gzip", "deflate"}:
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)  # a gzip or a zlib header, detected
    raise Failure(f"consul answer has Content-Encoding {encoding[:40]!r}, which the scaler does not decode")


def _inflate_into(body: bytearray, inflate: Any, chunk: bytes, limit: int) -> None:
    """Inflate ``chunk`` onto ``body``, never more than one byte past ``limit`` (then: too large)."""
    data = chunk
    try:
        while data and len(body) <= limit:
            out = inflate.decompress(data, limit - len(body) + 1)
            body += out
            if not out and len(inflate.unconsumed_tail) == len(data):
                break  # no progress (cannot happen with zlib; never spin on it)
            data = inflate.unconsumed_tail
    except zlib.error as exc:
        raise Failure(f"consul answer malformed: cannot inflate the body: {exc}") from None


def _too_large(limit: int, what: str) -> str:
    return (
        f"consul answer too large: {what} exceeds consul.max_answer_bytes ({limit} bytes; unset, it is "
        "derived from policy.max_replicas)"
    )


class _Consul(consul.aio.Consul):  # type: ignore[misc]  # py-consul ships no types
    """``consul.aio.Consul`` on ``_StreamingHTTPClient`` (``http_connect`` is py-consul's hook for it)."""

    def __init__(self, *args: Any, max_body: int, **kwargs: Any) -> None:
        self.max_body = max_body  # before py-consul's __init__, which calls http_connect
        super().__init__(*args, **kwargs)

    def http_connect(
        self, host: str, port: int, scheme: str, verify: bool | str = True, cert: Any = None
    ) -> _StreamingHTTPClient:
        client = _StreamingHTTPClient(
            host,
            port,
            scheme,
            loop=self.loop,
            connections_limit=self.connections_limit,
            connections_timeout=self.connections_timeout,
            verify=verify,
            cert=cert,
        )
        client.max_body = self.max_body
        return client


class HealthTransport:
    """GETs the watched service's health: ``async with HealthTransport(config) as t: await t.get(index)``."""

    def __init__(self, config: ConsulConfig) -> None:
        self._config = config
        self._client: _Consul | None = None
        self._path = f"/v1/health/service/{config.service}"

    async def __aenter__(self) -> HealthTransport:
        config = self._config
        url = urllib.parse.urlsplit(config.address)
        scheme = url.scheme or "http"
        verify: bool | str = config.tls_verify
        if verify and config.ca_file is not None:
            verify = str(config.ca_file)
        self._client = _Consul(
            max_body=config.max_answer_bytes or answer_limit(1),
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if scheme == "https" else 80),
            scheme=scheme,
            token=None,
            dc=config.datacenter,
            verify=verify,
            connections_timeout=config.read_timeout,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def request_timeout(self, index: ConsulIndex | None) -> float:
        """The HTTP timeout of one query: above wait × 17/16 when it blocks (Consul's jitter)."""
        return self._config.read_timeout if index else NON_BLOCKING_TIMEOUT

    async def get(self, index: ConsulIndex | None) -> Response:
        """One GET (blocking when ``index`` is set); raise ``Failure`` when no answer arrives."""
        if self._client is None:
            raise RuntimeError("HealthTransport used outside 'async with'")
        config = self._config
        params: list[tuple[str, str]] = []
        if index:
            params += [("index", str(index)), ("wait", go_duration(config.wait))]
        if config.consistency != "default":
            params.append((config.consistency, ""))
        if config.datacenter:
            params.append(("dc", config.datacenter))
        if config.filter:
            params.append(("filter", config.filter))
        # Identity unless consul.compress: see ConsulConfig.compress.
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip" if config.compress else "identity"}
        try:
            token = config.token()
        except OSError as exc:
            raise Failure(f"consul token unreadable: {config.token_file}: {exc.strerror or exc}") from None
        except ValueError as exc:  # not UTF-8, too large
            where = config.token_file or "$CONSUL_HTTP_TOKEN_FILE"
            raise Failure(f"consul token unreadable: {where}: {_describe(exc)}") from None
        if token:
            if not token.isascii() or not token.isprintable():
                raise Failure("consul token unusable: it holds characters an HTTP header cannot carry")
            headers["X-Consul-Token"] = token
        try:
            response: Response = await self._client.http.get(
                Response._make,
                self._path,
                params=params,
                headers=headers,
                raw=True,
                connections_timeout=self.request_timeout(index),
            )
        except (aiohttp.ClientError, OSError, consul.ConsulException) as exc:
            raise Failure(f"consul unreachable: {_describe(exc)}") from None
        except TimeoutError:
            raise Failure(f"consul unreachable: no answer within {self.request_timeout(index):g}s") from None
        return response


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
