"""Small builders shared by the delivery tests."""

from __future__ import annotations

import io
import struct
import wave

from PIL import Image, PngImagePlugin

from comfy_worker.delivery.base import DeliveryContext
from comfy_worker.media.outputs import FileRef, ProducedOutput, guess_mime, kind_for


def output(filename: str, data: bytes, *, node_id: str = "9", key: str = "images") -> ProducedOutput:
    mime = guess_mime(filename)
    return ProducedOutput(node_id=node_id, key=key, kind=kind_for(key, filename, mime), mime_type=mime,
                          ref=FileRef(filename=filename, subfolder="", type="output"), _content=data)


def text_output(text: str, node_id: str = "12") -> ProducedOutput:
    return ProducedOutput(node_id=node_id, key="text", kind="text", mime_type="text/plain; charset=utf-8",
                          text=text)


def png(width: int = 8, height: int = 6, *, workflow: str | None = None, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), (200, 30, 40) if mode == "RGB" else (200, 30, 40, 128))
    info = None
    if workflow is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", workflow)
        info.add_text("workflow", workflow)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(duration_s: float, width: int, height: int, timescale: int = 1000) -> bytes:
    """A minimal MP4 header (ftyp + moov/mvhd + trak/tkhd), enough for header probing."""
    mvhd = bytes(4) + bytes(8) + struct.pack(">II", timescale, int(duration_s * timescale)) + bytes(80)
    tkhd = bytes(4) + bytes(8) + struct.pack(">I", 1) + bytes(4) + struct.pack(">I", 0) + bytes(52) + \
        struct.pack(">II", width << 16, height << 16)
    return box(b"ftyp", b"isom" + bytes(4) + b"isomiso2mp41") + \
        box(b"moov", box(b"mvhd", mvhd) + box(b"trak", box(b"tkhd", tkhd))) + box(b"mdat", b"\0" * 64)


def ctx(job_id: str = "job-123", prompt_id: str = "prompt-abc") -> DeliveryContext:
    return DeliveryContext(job_id=job_id, prompt_id=prompt_id)


def self_signed_cert(directory, names=("public.test", "localhost"), ip="127.0.0.1"):  # type: ignore[no-untyped-def]
    """A throw-away CA-less certificate for loopback TLS servers; returns (cert_path, key_path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([*(x509.DNSName(n) for n in names),
                                                        x509.IPAddress(ipaddress.ip_address(ip))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
