"""Fetching URLs that a request names, without letting the request reach the worker's own network (SSRF).

Every hop (the first URL and each redirect) is checked the same way:

1. scheme ``https`` (``http`` only when the operator allows it), no credentials in the URL;
2. the host is resolved once; every address it resolves to must be public — loopback, private (RFC 1918,
   ULA), link-local (and so the 169.254.169.254 cloud metadata service), CGNAT, multicast, reserved,
   documentation and unspecified ranges are refused, also when hidden inside IPv6 (IPv4-mapped,
   IPv4-compatible, 6to4, NAT64, Teredo) or spelled as decimal/octal/hex numbers (``2130706433``,
   ``0177.0.0.1``, ``0x7f.1``);
3. the connection goes to the address that was checked (pinned), with the original host name kept for
   the ``Host`` header, TLS SNI and certificate checks — so a DNS answer that changes between check and
   connect (rebinding) cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

_BLOCKED_V4 = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
)]
_BLOCKED_V6 = [ipaddress.ip_network(n) for n in (
    "::/128", "::1/128", "100::/64", "2001::/32", "2001:db8::/32", "2001:10::/28", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
)]
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_BLOCKED_NAMES = {"localhost", "metadata", "metadata.google.internal", "instance-data",
                  "metadata.azure.internal"}


class UrlRefused(Exception):
    """The URL may not be fetched; the message says why (it never contains credentials)."""


def is_public_address(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        packed = ip.packed
        if packed[:12] == bytes(12):  # IPv4-compatible ::a.b.c.d (deprecated but still routed by some stacks)
            return is_public_address(ipaddress.IPv4Address(packed[12:]))
        if any(ip in net for net in _NAT64):
            return is_public_address(ipaddress.IPv4Address(packed[12:]))
        if ip in _SIX_TO_FOUR:
            return is_public_address(ipaddress.IPv4Address(packed[2:6]))
        if any(ip in net for net in _BLOCKED_V6):
            return False
        return ip.is_global and not ip.is_multicast
    if any(ip in net for net in _BLOCKED_V4):
        return False
    return ip.is_global and not ip.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any spelling the C library accepts.

    ``inet_aton`` is what most resolvers apply to numeric names, so ``2130706433``, ``0177.0.0.1`` and
    ``0x7f.1`` all mean 127.0.0.1 to it; they must mean the same to the check."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, UnicodeError):
        return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


@dataclass
class UrlPolicy:
    allow_private: bool = False
    allow_http: bool = False
    resolver: Resolver = system_resolver
    # Test hook: decide that (host, address) counts as public, e.g. a test host name on loopback. The
    # worker never sets it.
    treat_as_public: Callable[[str, IPAddress], bool] | None = None


def url_policy(settings: object) -> UrlPolicy:
    """The policy for every connection a request chooses (input URLs, a request's S3 endpoint), from the
    operator's ALLOW_PRIVATE_URLS and ALLOW_HTTP_URLS. Callers reach it through this module, so that tests can
    give it a resolver that maps test names to loopback."""
    return UrlPolicy(allow_private=bool(getattr(settings, "allow_private_urls", False)),
                     allow_http=bool(getattr(settings, "allow_http_urls", False)))


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str
    request_path: str
    host_header: str


def check_url(url: str, policy: UrlPolicy) -> Target:
    """Check one URL and resolve its host; the returned address is the one to connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"https", "http"}:
        raise UrlRefused(f"scheme '{scheme}' is not allowed (https only)")
    if scheme == "http" and not policy.allow_http:
        raise UrlRefused("plain http:// is not allowed; use https:// (operator setting ALLOW_HTTP_URLS)")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("credentials inside the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    literal = literal_address(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        if host.lower() in _BLOCKED_NAMES or host.lower().endswith(".localhost"):
            _refuse_private(policy, host, f"host '{host}' is a local or metadata name")
        try:
            addresses = policy.resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"host '{host}' does not resolve ({exc.__class__.__name__})") from None
        if not addresses:
            raise UrlRefused(f"host '{host}' does not resolve")
    checked: list[IPAddress] = []
    for raw in addresses:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        public = is_public_address(ip) or bool(policy.treat_as_public and policy.treat_as_public(host, ip))
        if not public:
            # One non-public answer refuses the host: a resolver that mixes answers is a rebinding attempt.
            _refuse_private(policy, host, f"host '{host}' resolves to non-public address {ip}")
        checked.append(ip)
    address = str(checked[0])
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
    return Target(scheme, host, port, address, path, host_header)


def _refuse_private(policy: UrlPolicy, host: str, reason: str) -> None:
    if not policy.allow_private:
        raise UrlRefused(reason + " (operator setting ALLOW_PRIVATE_URLS)")


@dataclass
class Fetched:
    data: bytes
    content_type: str | None
    final_url: str
    redirects: list[str] = field(default_factory=list)


class TooLarge(UrlRefused):
    pass


def fetch_url(url: str, policy: UrlPolicy, *, max_bytes: int, timeout: float, max_redirects: int,
              ca_certs: str | None = None) -> Fetched:
    """GET a URL under ``policy``: every hop checked, connection pinned, size and total time bounded."""
    deadline = time.monotonic() + timeout
    redirects: list[str] = []
    current = url
    while True:
        target = check_url(current, policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UrlRefused(f"timed out after {timeout:g} s")
        response = _get_pinned(target, remaining, ca_certs)
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise UrlRefused(f"HTTP {response.status} without a Location header")
                if len(redirects) >= max_redirects:
                    raise UrlRefused(f"more than {max_redirects} redirects")
                current = urljoin(current, location)
                redirects.append(_display(current))
                continue
            if response.status != 200:
                raise UrlRefused(f"HTTP {response.status}")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"{int(length)} bytes, over the limit of {max_bytes}")
            chunks: list[bytes] = []
            total = 0
            for chunk in response.stream(256 * 1024):
                total += len(chunk)
                if total > max_bytes:
                    raise TooLarge(f"more than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise UrlRefused(f"timed out after {timeout:g} s")
                chunks.append(chunk)
            return Fetched(b"".join(chunks), response.headers.get("Content-Type"), current, redirects)
        finally:
            response.release_conn()
            response.close()


class ConnectionFailed(UrlRefused):
    """The checked address did not answer (refused, reset, timed out): another attempt may succeed."""


def open_pinned(url: str, policy: UrlPolicy, *, headers: dict[str, str], timeout: float,
                ca_certs: str | None = None) -> urllib3.BaseHTTPResponse:
    """One GET of one hop, checked and pinned like `fetch_url`'s, with the caller's headers and the body left
    unread; redirects are the caller's to follow (each through this function again). Large downloads use it."""
    target = check_url(url, policy)
    return request_pinned(target, timeout, ca_certs, headers=headers)


def _get_pinned(target: Target, timeout: float, ca_certs: str | None) -> urllib3.BaseHTTPResponse:
    return request_pinned(target, timeout, ca_certs)


def request_pinned(target: Target, timeout: float, ca_certs: str | None = None, *, method: str = "GET",
                   body: bytes | None = None, headers: dict[str, str] | None = None) -> urllib3.BaseHTTPResponse:
    """One request to the address `check_url` checked (never a redirect: the caller checks each hop)."""
    urllib3_timeout = urllib3.Timeout(connect=min(timeout, 15.0), read=timeout)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            target.address, target.port, timeout=urllib3_timeout, retries=False, maxsize=1,
            cert_reqs="CERT_REQUIRED", ca_certs=ca_certs or certifi.where(),
            server_hostname=target.host, assert_hostname=target.host)
    else:
        pool = urllib3.HTTPConnectionPool(target.address, target.port, timeout=urllib3_timeout, retries=False,
                                          maxsize=1)
    try:
        # Host last: a caller's header can never point the request at another virtual host.
        return pool.urlopen(method, target.request_path, body=body,
                            headers={"User-Agent": "comfy-worker", "Accept-Encoding": "identity", **(headers or {}),
                                     "Host": target.host_header},
                            redirect=False, preload_content=False, retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise ConnectionFailed(f"connection failed ({exc.__class__.__name__})") from None


def _display(url: str) -> str:
    """A URL without its query string, which often carries signatures or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


display_url = _display


def check_endpoint(url: str, policy: UrlPolicy) -> Target:
    """Check a request-supplied service endpoint (an S3 endpoint in ``s3Config``): refused unless public; the
    returned target is the address every connection to it must go to."""
    return check_url(url, policy)
