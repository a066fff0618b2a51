"""An S3 client that connects only to the endpoint address the worker checked.

A request's `s3Config.endpointUrl` names a host the caller controls. The host is checked once
(urlsafety.check_url: public addresses only) and every connection of the client then goes to the address that
passed, with the host name kept for the Host header, TLS SNI and the certificate check — so a DNS answer that
changes after the check (rebinding) cannot send a signed request, with the job's output in it, anywhere else.
A request for any other host (a virtual-hosted `<bucket>.<host>`) is refused, never resolved.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import botocore.awsrequest
from botocore.exceptions import HTTPClientError
from botocore.httpsession import URLLib3Session

from .urlsafety import Target, UrlRefused

_SSL_KEYWORDS = ("ssl_context", "cert_file", "key_file", "cert_reqs", "ca_certs")


class _PinnedPools:
    """Stands where botocore expects a urllib3 PoolManager: one pool, to the checked address."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def connection_from_url(self, url: str) -> Any:
        return self.pool

    def clear(self) -> None:
        self.pool.close()


class PinnedSession(URLLib3Session):
    """botocore's HTTP session, held to one checked (host, port, address)."""

    def __init__(self, pin: Target, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pin = pin
        pool_kwargs = self._get_pool_manager_kwargs()
        if pin.scheme == "https":
            pool = botocore.awsrequest.AWSHTTPSConnectionPool(
                pin.address, pin.port, server_hostname=pin.host, assert_hostname=pin.host, **pool_kwargs)
        else:
            pool = botocore.awsrequest.AWSHTTPConnectionPool(
                pin.address, pin.port, **{k: v for k, v in pool_kwargs.items() if k not in _SSL_KEYWORDS})
        self._manager = _PinnedPools(pool)  # type: ignore[assignment]

    def _get_connection_manager(self, url: str, proxy_url: str | None = None) -> Any:
        return self._manager  # never a proxy: the proxy would resolve the host itself

    def send(self, request: Any) -> Any:
        parts = urlsplit(request.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if (parts.hostname or "").rstrip(".").lower() != self.pin.host.lower() or port != self.pin.port \
                or parts.scheme != self.pin.scheme:
            raise HTTPClientError(error=UrlRefused(f"connection to {parts.hostname}:{port} refused: only the checked "
                                                   f"endpoint {self.pin.host}:{self.pin.port} is reached"))
        # The signature covers this same host; urllib3 would otherwise send the address as Host.
        request.headers["Host"] = self.pin.host_header
        return super().send(request)


def pin_client(client: Any, pin: Target, *, timeout: tuple[float, float], max_pool_connections: int) -> Any:
    """Make `client` (a boto3 S3 client) send every request through a PinnedSession."""
    endpoint = client._endpoint  # botocore keeps the HTTP session on the endpoint; there is no public setter
    endpoint.http_session = PinnedSession(pin, timeout=timeout, max_pool_connections=max_pool_connections)
    return client
