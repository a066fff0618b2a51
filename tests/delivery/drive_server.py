"""A local stand-in for Google's OAuth token endpoint and the Drive v3 API, for tests.

It speaks the parts the worker uses: the service-account JWT-bearer token exchange (the JWT signature is
verified against the key's public half), multipart and resumable uploads (308 + Range for partial chunks),
permissions, delete and ``alt=media`` download. Every API call needs a token it issued.
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.httpserve import serve_http


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass
class DriveFile:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    content: bytes
    permissions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DriveState:
    public_key: Any = None
    token_uri: str = ""
    tokens: set[str] = field(default_factory=set)
    files: dict[str, DriveFile] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    fail_chunks: int = 0  # answer this many resumable chunk PUTs with 503 first
    refuse_uploads: bool = False  # answer upload requests with 403
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: DriveState
    base_url: str

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"code": status, "message": message}})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.state.tokens:
            return True
        self._error(401, "Request had invalid authentication credentials.")
        return False

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        self.state.requests.append((method, parts.path, query))
        if parts.path == "/token" and method == "POST":
            return self._token()
        if not self._authorized():
            return
        if parts.path == "/upload/drive/v3/files":
            if self.state.refuse_uploads:
                self._body()
                return self._error(403, "The user does not have sufficient permissions for this file.")
            upload_type = query.get("uploadType", [""])[0]
            if method == "POST" and upload_type == "multipart":
                return self._multipart(query)
            if method == "POST" and upload_type == "resumable":
                return self._resumable_start(query)
            if method == "PUT" and "upload_id" in query:
                return self._resumable_chunk(query)
        match = re.fullmatch(r"/drive/v3/files/([^/]+)(/permissions)?", parts.path)
        if match:
            file = self.state.files.get(match.group(1))
            if file is None:
                return self._error(404, "File not found.")
            if match.group(2) and method == "POST":
                perm = json.loads(self._body())
                file.permissions.append(perm)
                return self._send(200, {"id": "anyoneWithLink", **perm})
            if method == "DELETE":
                del self.state.files[file.id]
                return self._send(204)
            if method == "GET" and query.get("alt") == ["media"]:
                self.send_response(200)
                self.send_header("Content-Length", str(len(file.content)))
                self.end_headers()
                self.wfile.write(file.content)
                return None
        return self._error(404, f"no route {method} {parts.path}")

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def _token(self) -> None:
        form = parse_qs(self._body().decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self._send(400, {"error": "unsupported_grant_type"})
        header_b64, claims_b64, sig_b64 = form["assertion"][0].split(".")
        try:
            self.state.public_key.verify(_b64url(sig_b64), f"{header_b64}.{claims_b64}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001
            return self._send(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        claims = json.loads(_b64url(claims_b64))
        # google-auth always names Google's token endpoint as the audience, wherever token_uri points.
        if claims.get("aud") not in {self.state.token_uri, "https://oauth2.googleapis.com/token"} or "drive" not in claims.get("scope", "") or \
                claims.get("exp", 0) < time.time():
            return self._send(400, {"error": "invalid_grant", "error_description": f"bad claims {claims}"})
        token = "tok-" + uuid.uuid4().hex
        self.state.tokens.add(token)
        return self._send(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _create(self, meta: dict[str, Any], content: bytes, query: dict[str, list[str]]) -> None:
        file_id = uuid.uuid4().hex[:16]
        file = DriveFile(file_id, meta.get("name", "untitled"), meta.get("mimeType", "application/octet-stream"),
                         meta.get("parents", []), content)
        self.state.files[file_id] = file
        full = {"id": file_id, "name": file.name, "mimeType": file.mime_type,
                "webViewLink": f"https://drive.google.com/file/d/{file_id}/view?usp=drivesdk",
                "webContentLink": f"https://drive.google.com/uc?id={file_id}&export=download"}
        fields = query.get("fields", ["id,name,mimeType"])[0].split(",")
        self._send(200, {k: v for k, v in full.items() if k in fields})

    def _multipart(self, query: dict[str, list[str]]) -> None:
        body = self._body()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
        parts = list(message.iter_parts())
        meta = json.loads(parts[0].get_content())
        content = parts[1].get_payload(decode=True)
        self._create(meta, content, query)

    def _resumable_start(self, query: dict[str, list[str]]) -> None:
        meta = json.loads(self._body() or b"{}")
        upload_id = uuid.uuid4().hex
        self.state.sessions[upload_id] = {"meta": meta, "data": bytearray(), "query": query}
        location = f"{self.base_url}/upload/drive/v3/files?uploadType=resumable&upload_id={upload_id}"
        self._send(200, None, {"Location": location})

    def _resumable_chunk(self, query: dict[str, list[str]]) -> None:
        session = self.state.sessions.get(query["upload_id"][0])
        body = self._body()
        if session is None:
            return self._error(404, "upload session not found")
        with self.state.lock:
            if self.state.fail_chunks > 0:
                self.state.fail_chunks -= 1
                return self._error(503, "Backend Error")
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", self.headers.get("Content-Range", ""))
        status_query = re.fullmatch(r"bytes \*/(\d+|\*)", self.headers.get("Content-Range", ""))
        data: bytearray = session["data"]
        if match:
            start, end = int(match.group(1)), int(match.group(2))
            if start != len(data):
                return self._error(400, f"expected offset {len(data)}, got {start}")
            data += body[:end - start + 1]
            total = match.group(3)
        elif status_query:
            total = status_query.group(1)
        else:
            return self._error(400, "missing Content-Range")
        if total != "*" and len(data) == int(total):
            del self.state.sessions[query["upload_id"][0]]
            return self._create(session["meta"], bytes(data), session["query"])
        headers = {"Range": f"bytes=0-{len(data) - 1}"} if data else {}
        self._send(308, None, headers)


class DriveServer:
    def __init__(self, cert: str, key: str, public_key: Any) -> None:
        self.state = DriveState(public_key=public_key)
        self._handler = type("DriveHandler", (_Handler,), {"state": self.state, "base_url": ""})
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, key)
        self._servers = contextlib.ExitStack()
        self.url = ""

    def __enter__(self) -> DriveServer:
        server = self._servers.enter_context(serve_http(self._handler, tls=self._tls))
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        self._handler.base_url = self.url
        self.state.token_uri = f"{self.url}/token"
        return self

    def __exit__(self, *exc: object) -> None:
        self._servers.close()
