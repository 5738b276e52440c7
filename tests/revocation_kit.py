"""Real revocation services on 127.0.0.1 for the tests and the benchmark.

``OCSPResponder`` runs ``openssl ocsp`` as a responder process over a CA's
``openssl ca`` database, signing with a delegated responder certificate
(id-kp-OCSPSigning, issued by the CA) or with the CA itself.
``CRLServer`` serves a directory of CRL files with ``http.server`` in a
thread. ``RevocationWorld`` is an openssl-made CA with certificates that are
good, revoked, unknown to the responder, or point at a stale CRL or a dead
responder, and both services running for it.
"""

from __future__ import annotations

import http.server
import os
import select
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from openssl_pki import PKI, Made


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OCSPResponder:
    """``openssl ocsp -index ... -port PORT`` until ``stop``, asked at 127.0.0.1.

    OpenSSL 3.0 takes a bare port number (it listens on every address; a
    host part is accepted from 3.1 on).
    """

    def __init__(self, pki: PKI, ca: Made, signer: Made, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        args = [
            "openssl", "ocsp", "-index", str(pki.index(ca)), "-port", str(self.port),
            "-rsigner", str(signer.cert), "-rkey", str(signer.key), "-CA", str(ca.cert), "-ndays", "1",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Ready when it says so. A probe connection would not do: the responder
        # serves one connection at a time and waits on an empty one for good.
        assert self.process.stderr is not None
        deadline = time.monotonic() + 15
        said = b""
        while b"waiting for OCSP client connections" not in said:
            ready, _, _ = select.select([self.process.stderr], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.process.stderr.fileno(), 4096) if ready else b""
            if not chunk:
                self.process.kill()
                self.process.wait()
                raise RuntimeError("openssl ocsp did not start: " + said.decode(errors="replace"))
            said += chunk
        # What it says per request is read and dropped, so that a full pipe never stops it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        while os.read(self.process.stderr.fileno(), 65536):
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class CRLServer:
    """``http.server`` serving ``directory`` on 127.0.0.1 in a thread; counts the requests."""

    def __init__(self, directory: Path) -> None:
        server = self

        class Handler(_Quiet):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                server.requests += 1
                super().do_GET()

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@dataclass
class RevocationWorld:
    """A CA, its certificates and its running responder and CRL server (``stop`` ends both)."""

    pki: PKI
    root: Made
    certs: dict[str, Made]
    responder: OCSPResponder
    crls: CRLServer
    dead_url: str
    extra: list[OCSPResponder] = field(default_factory=list)

    def stop(self) -> None:
        for responder in [self.responder, *self.extra]:
            responder.stop()
        self.crls.stop()


def make_world(directory: Path, *, key: str = "rsa2048") -> RevocationWorld:
    """The CA and certificates the revocation tests use, with both services running.

    ``good``/``revoked``/``unknown``: OCSP only (``unknown`` is left out of
    the responder's database); ``crl-good``/``crl-revoked``: CRL only;
    ``stale``: a CRL whose nextUpdate has passed; ``down``: a responder
    where nothing listens; ``fallback``: that dead responder, then a good
    CRL. Every end-entity certificate is for ``<name>@revocation.test``.
    """
    pki = PKI(directory)
    root = pki.root("Revocation Root", key="p256")
    crl_dir = directory / "crls"
    crl_dir.mkdir()
    crls = CRLServer(crl_dir)
    ocsp_port = free_port()
    ocsp_url = f"http://127.0.0.1:{ocsp_port}/"
    dead_url = f"http://127.0.0.1:{free_port()}/"
    signer = pki.issue("OCSP Responder", ca=root, key="p256", key_usage="digitalSignature", eku="OCSPSigning")
    plan = {
        "good": (ocsp_url, None),
        "revoked": (ocsp_url, None),
        "unknown": (ocsp_url, None),
        "crl-good": (None, crls.url + "root.crl"),
        "crl-revoked": (None, crls.url + "root.crl"),
        "stale": (None, crls.url + "stale.crl"),
        "down": (dead_url, None),
        "fallback": (dead_url, crls.url + "root.crl"),
    }
    certs = {
        name: pki.issue(
            name, ca=root, key=key, emails=(f"{name}@revocation.test",), key_usage="digitalSignature,keyEncipherment",
            ocsp_url=ocsp, crl_url=crl,
        )
        for name, (ocsp, crl) in plan.items()
    }
    pki.revoke(certs["revoked"], ca=root)
    pki.revoke(certs["crl-revoked"], ca=root)
    pki.crl(root, crl_dir / "stale.crl", last_update="20200101000000Z", next_update="20200102000000Z")
    pki.crl(root, crl_dir / "root.crl")
    # The responder knows every certificate the CA issued but "unknown".
    serial = format(certs["unknown"].certificate.serial_number, "X")
    index = pki.index(root)
    index.write_text("".join(line for line in index.read_text().splitlines(True) if f"\t{serial}\t" not in line))
    responder = OCSPResponder(pki, root, signer, port=ocsp_port)
    return RevocationWorld(pki, root, certs, responder, crls, dead_url)
