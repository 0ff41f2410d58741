"""Certificates for a private broker's TLS listener: a CA of its own and the certificates it
signs, made with the `openssl` command (the `cryptography` package is no dependency of
flexedge, and every machine with Mosquitto's TLS has openssl).

For tests and trials only: the keys are unencrypted and valid for two days.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flexedge.errors import BrokerUnavailable

log = logging.getLogger(__name__)

_DAYS = "2"
# P-256: a key in milliseconds, where RSA 2048 takes a good part of a second each.
_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, each a PEM file."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed for this machine, and a client certificate."""

    ca: CertFiles
    server: CertFiles
    client: CertFiles

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_file


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise BrokerUnavailable(
            "openssl not found on PATH: it makes the test certificates "
            "(install it with `sudo apt-get install openssl`)"
        )
    try:
        subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        reason = exc.stderr.decode(errors="replace").strip()
        raise BrokerUnavailable(f"openssl {args[0]} failed: {reason}") from exc


def make_ca(folder: Path, name: str = "flexedge test CA") -> CertFiles:
    """A self-signed CA certificate `name` and its key in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = name.replace(" ", "-")
    files = CertFiles(folder / f"{stem}.pem", folder / f"{stem}.key")
    _openssl(
        "req",
        "-x509",
        *_KEY,
        "-keyout",
        str(files.key_file),
        "-out",
        str(files.cert_file),
        "-days",
        _DAYS,
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )
    return files


def make_cert(
    ca: CertFiles,
    folder: Path,
    name: str,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    purpose: Literal["server", "client"] = "server",
) -> CertFiles:
    """A certificate for `name` signed by `ca`; a server certificate names `hosts` in its
    subjectAltName (what a TLS client checks the host it dialled against)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = CertFiles(folder / f"{name}.pem", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    _openssl(
        "req",
        "-new",
        *_KEY,
        "-keyout",
        str(files.key_file),
        "-out",
        str(request),
        "-subj",
        f"/CN={name}",
        cwd=folder,
    )
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={'serverAuth' if purpose == 'server' else 'clientAuth'}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if purpose == "server":
        extensions.append("subjectAltName=" + ",".join(_alt_name(h) for h in hosts))
    ext_file = folder / f"{name}.ext"
    ext_file.write_text("\n".join(extensions) + "\n", encoding="utf-8")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca.cert_file),
        "-CAkey",
        str(ca.key_file),
        "-CAcreateserial",
        "-out",
        str(files.cert_file),
        "-days",
        _DAYS,
        "-extfile",
        str(ext_file),
        cwd=folder,
    )
    return files


def _alt_name(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"


def make_pki(folder: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> Pki:
    """A CA with a server certificate for `hosts` and a client certificate, in `folder`."""
    ca = make_ca(folder)
    server = make_cert(ca, folder, "broker", hosts=hosts)
    client = make_cert(ca, folder, "site-client", purpose="client")
    log.info("test certificates in %s", folder)
    return Pki(ca, server, client)
