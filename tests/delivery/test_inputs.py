"""Input media: base64, data URIs, URLs (SSRF-safe) and s3:// objects."""

from __future__ import annotations

import base64
import ipaddress
import ssl
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from delivery_helpers import mp4, png, self_signed_cert, wav

from comfy_worker.storage.s3 import s3_target
from comfy_worker.errors import ErrorCode, WorkerError
from comfy_worker.media.inputs import resolve_input
from comfy_worker.storage.urlsafety import UrlPolicy, UrlRefused, check_url, fetch_url, is_public_address
from comfy_worker.settings import Settings
from tests.httpserve import serve_http

PNG = png(12, 9)


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"nope"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def web() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"routes": {}, "hits": []})
    with serve_http(handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler


LOCAL = Settings(allow_private_urls=True, allow_http_urls=True)


def test_base64_and_data_uri_are_decoded_and_typed():
    b64 = base64.b64encode(PNG).decode()
    plain = resolve_input(b64, field="images[0].image", settings=Settings())
    assert (plain.data, plain.mime, plain.ext, plain.source) == (PNG, "image/png", ".png", "base64")
    uri = resolve_input(f"data:image/jpeg;base64,{b64}", field="x", settings=Settings())
    # The declared type is ignored: the content decides.
    assert (uri.mime, uri.source) == ("image/png", "data_uri")
    wrapped = "\n".join(b64[i:i + 60] for i in range(0, len(b64), 60))
    assert resolve_input(wrapped, field="x", settings=Settings()).data == PNG


def test_bad_base64_is_invalid_input_naming_the_field():
    with pytest.raises(WorkerError) as caught:
        resolve_input("not base64 at all!!", field="images[2].image", settings=Settings())
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.details["errors"][0]["field"] == "images[2].image"


def test_unknown_or_wrong_type_is_refused_for_image_slots():
    with pytest.raises(WorkerError) as unknown:
        resolve_input(base64.b64encode(b"just some text bytes").decode(), field="inputs.10.image",
                      settings=Settings())
    assert "unknown file type" in unknown.value.message
    with pytest.raises(WorkerError) as audio_as_image:
        resolve_input(base64.b64encode(wav(0.1)).decode(), field="inputs.10.image", settings=Settings())
    assert "audio/wav" in audio_as_image.value.message
    assert resolve_input(base64.b64encode(wav(0.1)).decode(), field="a", settings=Settings(),
                         slot="audio").mime == "audio/wav"
    assert resolve_input(base64.b64encode(mp4(1, 8, 8)).decode(), field="v", settings=Settings(),
                         slot="video").ext == ".mp4"


def test_size_limit_is_enforced_before_decoding():
    with pytest.raises(WorkerError) as caught:
        resolve_input(base64.b64encode(PNG).decode(), field="x", settings=Settings(max_input_image_bytes=len(PNG) // 2))
    assert caught.value.code is ErrorCode.INVALID_INPUT and "over the limit" in caught.value.message


def test_url_is_fetched_when_allowed(web):
    base, handler = web
    handler.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, PNG)
    handler.routes["/moved"] = (302, {"Location": "/cat.png"}, b"")
    media = resolve_input(f"{base}/moved", field="images[0].image", settings=LOCAL)
    assert media.data == PNG and media.source == "url"
    assert handler.hits == ["/moved", "/cat.png"]


def test_url_errors_name_field_and_url_without_query(web):
    base, _ = web
    with pytest.raises(WorkerError) as caught:
        resolve_input(f"{base}/missing.png?token=SECRET", field="images[1].image", settings=LOCAL)
    err = caught.value
    assert err.code is ErrorCode.INPUT_FETCH_FAILED and err.details["field"] == "images[1].image"
    assert "HTTP 404" in err.message and "SECRET" not in err.to_error_string()


def test_url_size_limit(web):
    base, handler = web
    handler.routes["/big.png"] = (200, {}, PNG + b"\0" * 5000)
    with pytest.raises(WorkerError) as caught:
        resolve_input(f"{base}/big.png", field="x", settings=Settings(allow_private_urls=True, allow_http_urls=True,
                                                                      max_input_image_bytes=1000))
    assert "too large" in caught.value.message


def test_too_many_redirects(web):
    base, handler = web
    handler.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(WorkerError) as caught:
        resolve_input(f"{base}/loop", field="x", settings=Settings(allow_private_urls=True, allow_http_urls=True,
                                                                   input_max_redirects=3))
    assert "more than 3 redirects" in caught.value.message


HOSTILE = [
    "https://127.0.0.1/x", "https://localhost/x", "https://10.1.2.3/x", "https://172.16.0.1/x",
    "https://192.168.1.1/x", "https://169.254.169.254/latest/meta-data/", "https://metadata.google.internal/x",
    "https://100.64.0.1/x", "https://0.0.0.0/x", "https://[::1]/x", "https://[::ffff:127.0.0.1]/x",
    "https://[::ffff:7f00:1]/x", "https://[::127.0.0.1]/x", "https://[2002:7f00:1::]/x",
    "https://[64:ff9b::a9fe:a9fe]/x", "https://[fe80::1]/x", "https://[fc00::1]/x", "https://[fd00:ec2::254]/x",
    "https://2130706433/x", "https://0177.0.0.1/x", "https://0x7f.1/x", "https://0x7f000001/x",
    "https://127.1/x", "https://224.0.0.1/x", "https://240.0.0.1/x", "https://198.18.0.1/x",
    "https://255.255.255.255/x", "https://[ff02::1]/x",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_refused(url):
    with pytest.raises(WorkerError) as caught:
        resolve_input(url, field="images[0].image", settings=Settings())
    err = caught.value
    assert err.code is ErrorCode.INPUT_FETCH_FAILED
    assert "non-public address" in err.message or "local or metadata name" in err.message
    assert err.details["field"] == "images[0].image"


@pytest.mark.parametrize("url,reason", [("http://93.184.216.34/x.png", "plain http"),
                                        ("ftp://example.com/x.png", "unsupported URL scheme"),
                                        ("file:///etc/passwd", "unsupported URL scheme"),
                                        ("https://user:pw@93.184.216.34/x", "credentials")])
def test_schemes_and_credentials_are_refused(url, reason):
    with pytest.raises(WorkerError) as caught:
        resolve_input(url, field="f", settings=Settings())
    assert reason in caught.value.message


def test_public_classification():
    assert is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert is_public_address(ipaddress.ip_address("2606:4700::1111"))
    assert is_public_address(ipaddress.ip_address("::ffff:93.184.216.34"))
    assert not is_public_address(ipaddress.ip_address("2001:0:4136:e378::1"))  # Teredo


def _public_test_policy(server_port: int, seen: list[str]) -> UrlPolicy:
    """'public.test' stands for a public host: it resolves to loopback and counts as public — for that name
    only. Every other loopback reference stays private."""
    def resolver(host: str, port: int) -> list[str]:
        seen.append(host)
        if host == "public.test":
            return ["127.0.0.1"]
        raise OSError("no such host")

    return UrlPolicy(allow_http=True, resolver=resolver,
                     treat_as_public=lambda host, ip: host == "public.test")


def test_redirect_from_public_server_to_private_address_is_refused(web):
    base, handler = web
    port = int(base.rsplit(":", 1)[1])
    handler.routes["/start"] = (302, {"Location": f"http://127.0.0.1:{port}/secret"}, b"")
    handler.routes["/to-metadata"] = (301, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    handler.routes["/secret"] = (200, {}, PNG)
    seen: list[str] = []
    policy = _public_test_policy(port, seen)
    # The first hop itself is fine:
    handler.routes["/ok"] = (200, {}, PNG)
    assert resolve_input(f"http://public.test:{port}/ok", field="x", settings=Settings(allow_http_urls=True),
                         policy=policy).data == PNG
    for path in ("/start", "/to-metadata"):
        with pytest.raises(WorkerError) as caught:
            resolve_input(f"http://public.test:{port}{path}", field="images[0].image",
                          settings=Settings(allow_http_urls=True), policy=policy)
        assert caught.value.code is ErrorCode.INPUT_FETCH_FAILED
        assert "non-public address" in caught.value.message
    assert "/secret" not in handler.hits  # the private target was never contacted


def test_host_with_mixed_public_and_private_answers_is_refused():
    policy = UrlPolicy(resolver=lambda host, port: ["93.184.216.34", "10.0.0.5"])
    with pytest.raises(UrlRefused, match="non-public address 10.0.0.5"):
        check_url("https://rebind.example/x", policy)


def test_connection_is_pinned_to_the_checked_address_with_tls_name_checks(tmp_path):
    """https to a name that only our resolver knows: reaching it proves the connection used the checked
    address, and the certificate was verified against the host name (SNI), not the IP."""
    cert, key = self_signed_cert(tmp_path)
    handler = type("H", (_Handler,), {"routes": {"/img.png": (200, {}, PNG)}, "hits": []})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve_http(handler, tls=context) as server:
        port = server.server_address[1]
        seen: list[str] = []
        policy = _public_test_policy(port, seen)
        fetched = fetch_url(f"https://public.test:{port}/img.png", policy, max_bytes=10**6, timeout=10,
                            max_redirects=0, ca_certs=str(cert))
        assert fetched.data == PNG and seen == ["public.test"]
        # Without our CA the certificate is refused.
        with pytest.raises(UrlRefused, match="connection failed"):
            fetch_url(f"https://public.test:{port}/img.png", policy, max_bytes=10**6, timeout=10, max_redirects=0)


def test_s3_input_is_read_with_configured_credentials(s3):
    """Under a prefix the operator allows (BUCKET_INPUT_PREFIXES); tests/delivery/test_storage_scope.py has
    the refusals."""
    s3.client().put_object(Bucket="second", Key="in/cat.png", Body=PNG)
    settings = s3.settings(bucket_input_prefixes="second/in")
    target = s3_target(settings, None, require_bucket=False)
    media = resolve_input("s3://second/in/cat.png", field="images[0].image", settings=settings,
                          s3_defaults=target)
    assert media.data == PNG and media.source == "s3"
    with pytest.raises(WorkerError) as caught:
        resolve_input("s3://second/in/missing.png", field="images[1].image", settings=settings,
                      s3_defaults=target)
    assert caught.value.code is ErrorCode.INPUT_FETCH_FAILED
    assert "s3://second/in/missing.png" in caught.value.message
    with pytest.raises(WorkerError) as none:
        resolve_input("s3://second/in/cat.png", field="f", settings=Settings(), s3_defaults=None)
    assert "no S3 credentials" in none.value.message
