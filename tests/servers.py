"""Local HTTP(S) servers for tests: a self-signed certificate, routes, and a log of what each
server received (paths and headers), to check what a client sent where."""
from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from pathlib import Path


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "cert.pem", directory / "key.pem"


class Server:
    """A threaded server on 127.0.0.1. `routes[path] = (status, headers, body)`; anything else is
    404. The body is sent as given, then the connection closes (HTTP/1.0): headers that announce
    more (Content-Length, Transfer-Encoding: chunked) make a transfer cut short. `requests` lists (path with query, headers dict) of everything received."""

    def __init__(self, cert: tuple[Path, Path] | None = None):
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, dict(self.headers)))
                status, headers, body = server.routes.get(self.path.split("?")[0], (404, {}, b"not found"))
                self.send_response(status)
                framing = {} if "Transfer-Encoding" in headers else {"Content-Length": str(len(body))}
                for key, value in {**framing, **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.httpd.server_address[1]}"
        self.host = self.url.split("://")[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, path: str, body: bytes) -> None:
        self.routes[path] = (200, {}, body)

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        self.routes[path] = (status, {"Location": to}, b"")

    def authorizations(self) -> list[str | None]:
        return [headers.get("Authorization") for _, headers in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (at the moment of asking)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process, timeout: float = 20) -> None:
    """Stop a server started with start_new_session=True and every worker it started: SIGTERM to
    its process group, SIGKILL if it is not gone within `timeout` seconds."""
    import os
    import signal
    import subprocess

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
