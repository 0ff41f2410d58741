"""The site file's `mqtt` section: where the site broker is, how to log in, and TLS to it.

The section names files (a password file, a CA, a client certificate) relative to the site
file, and the password may come from the environment instead; resolve_mqtt() turns it into
what every command connects with, and MqttSettings.broker() into the transport's Broker.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from flexedge.config.field_types import Strict
from flexedge.mqtt.broker_address import Broker, BrokerTls

log = logging.getLogger(__name__)

# The password from the environment (a systemd credential or an EnvironmentFile), for a
# site file that names no password and no password_file.
PASSWORD_ENV = "FLEXEDGE_MQTT_PASSWORD"


class MqttTls(Strict):
    """TLS to the broker. Paths are relative to the site file."""

    # The CA that signed the broker's certificate; left out, the system's trusted CAs.
    ca_file: str | None = Field(default=None, min_length=1)
    # A client certificate and its key, for a broker that asks for one: both or neither.
    cert_file: str | None = Field(default=None, min_length=1)
    key_file: str | None = Field(default=None, min_length=1)
    # Off only for a broker reached at an address its certificate does not name.
    check_hostname: bool = True

    @model_validator(mode="after")
    def _client_pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = (
                ("cert_file", "key_file") if self.key_file is None else ("key_file", "cert_file")
            )
            raise ValueError(f"{given} needs {missing} too: a client certificate and its key")
        return self


class MqttSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = Field(default="flexedge", min_length=1)
    username: str | None = None
    # SecretStr keeps the password out of reprs, logs and error messages. Once the site
    # file is loaded it holds the password whichever way it was given (resolve_mqtt).
    password: SecretStr | None = None
    # A file holding the password (its one line), so the site file can be shared.
    password_file: str | None = Field(default=None, min_length=1)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: MqttTls | None = None

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def broker(self) -> Broker:
        """Where the site broker is and how to log in to it, as the transport takes it:
        every command connects with this, so each gets the same login and TLS."""
        password = self.password.get_secret_value() if self.password else None
        tls = None
        if self.tls is not None:
            tls = BrokerTls(
                ca_file=self.tls.ca_file,
                cert_file=self.tls.cert_file,
                key_file=self.tls.key_file,
                check_hostname=self.tls.check_hostname,
            )
        return Broker(self.host, self.port, self.username, password, self.keepalive_s, tls)


def resolve_mqtt(
    mqtt: MqttSettings, base: Path, environ: Mapping[str, str] | None = None
) -> tuple[MqttSettings, list[tuple[str, str]]]:
    """The section with its files made absolute (from `base`, the site file's folder) and
    the password read from password_file or the environment, and the (field, problem) pairs
    of what cannot be used: a file that is missing, unreadable or not what it should be."""
    env = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    update: dict[str, object] = {}
    from_env = env.get(PASSWORD_ENV) or None
    if from_env is not None and (mqtt.password is not None or mqtt.password_file is not None):
        given = "password" if mqtt.password is not None else "password_file"
        problems.append((f"mqtt.{given}", f"{PASSWORD_ENV} is set too; give the password one way"))
    elif from_env is not None:
        update["password"] = SecretStr(from_env)
    elif mqtt.password_file is not None:
        path = _absolute(mqtt.password_file, base)
        update["password_file"] = str(path)
        secret, problem = _read_password(path)
        if problem:
            problems.append(("mqtt.password_file", problem))
        else:
            update["password"] = SecretStr(secret)
    has_password = "password" in update or mqtt.password is not None
    if has_password and mqtt.username is None:
        problems.append(("mqtt.username", "a password needs a username to log in with"))
    if mqtt.tls is not None:
        tls, tls_problems = _resolve_tls(mqtt.tls, base)
        update["tls"] = tls
        problems += tls_problems
    return mqtt.model_copy(update=update), problems


def _absolute(name: str, base: Path) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def _read_password(path: Path) -> tuple[str, str | None]:
    """The password in `path` (its trailing line break dropped), or a problem saying why not."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", f"password file {path} not found"
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return "", f"cannot read password file {path}: {reason}"
    secret = text.rstrip("\r\n")
    if not secret:
        return "", f"password file {path} is empty"
    if "\n" in secret:
        return "", f"password file {path} has more than one line; it holds the password alone"
    try:
        shared = path.stat().st_mode & 0o077
    except OSError:
        shared = 0
    if shared:
        log.warning("password file %s can be read by other users; chmod 600 it", path)
    return secret, None


def _resolve_tls(tls: MqttTls, base: Path) -> tuple[MqttTls, list[tuple[str, str]]]:
    """The TLS files made absolute, each loaded once as paho will load it, so that a wrong
    file is a problem of the site file, named by its field, and not a failed connect."""
    files = {
        name: str(_absolute(value, base))
        for name in ("ca_file", "cert_file", "key_file")
        if (value := getattr(tls, name)) is not None
    }
    problems: list[tuple[str, str]] = []
    for name, path in files.items():
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            problems.append((f"mqtt.tls.{name}", f"cannot read {path}: {exc.strerror or exc}"))
    if problems:
        return tls.model_copy(update=files), problems
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "ca_file" in files:
        try:
            context.load_verify_locations(files["ca_file"])
        except (ssl.SSLError, ValueError) as exc:
            problems.append(
                ("mqtt.tls.ca_file", f"{files['ca_file']} holds no CA certificate: {exc}")
            )
    if "cert_file" in files:
        try:
            context.load_cert_chain(files["cert_file"], files["key_file"])
        except (ssl.SSLError, ValueError) as exc:
            problems.append(
                (
                    "mqtt.tls.cert_file",
                    f"{files['cert_file']} and {files['key_file']} are no certificate and its "
                    f"key: {exc}",
                )
            )
    return tls.model_copy(update=files), problems
