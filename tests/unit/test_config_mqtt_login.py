"""The site file's mqtt login and TLS settings: where the password comes from (the file,
password_file, FLEXEDGE_MQTT_PASSWORD), paths relative to the site file, and the problems a
wrong one is reported by, each naming its field and never the password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.config.loader import EXAMPLE_SITE, Site, load_site
from flexedge.config.mqtt_settings import PASSWORD_ENV
from flexedge.errors import ConfigError, ConfigProblems
from flexedge.mqtt import Broker, BrokerTls
from tests.support.harness import write_site_file

PASSWORD = "Tr0ub4dor-&3-horse"


@pytest.fixture(autouse=True)
def _no_password_in_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The machine running the tests may have one set; each test sets what it needs.
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    yield


def site_with(folder: Path, **mqtt: Any) -> Path:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw["mqtt"].update(mqtt)
    folder.mkdir(parents=True, exist_ok=True)
    return write_site_file(folder, raw)


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_site(path)
    found = info.value.problems if isinstance(info.value, ConfigProblems) else [info.value]
    assert all(p.source == str(path) for p in found)
    return {p.field: p.problem for p in found}


def login(site: Site) -> tuple[str | None, str | None]:
    broker = site.config.mqtt.broker()
    return broker.username, broker.password


# --- password_file ------------------------------------------------------------------------


def test_password_file_is_relative_to_the_site_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "mqtt").write_text(PASSWORD + "\n", encoding="utf-8")
    path = site_with(folder, username="site", password_file="secrets/mqtt")
    # Not the working directory: a daemon under systemd runs from /.
    monkeypatch.chdir(tmp_path)

    site = load_site(path)

    assert login(site) == ("site", PASSWORD)  # the line break is not part of it
    assert site.config.mqtt.password_file == str(folder / "secrets" / "mqtt")


def test_an_absolute_password_file_is_taken_as_it_is(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "pw"
    secret.parent.mkdir()
    secret.write_text(PASSWORD, encoding="utf-8")
    site = load_site(site_with(tmp_path / "site", username="site", password_file=str(secret)))
    assert login(site) == ("site", PASSWORD)


def test_a_missing_password_file_names_the_field_and_the_file(tmp_path: Path) -> None:
    path = site_with(tmp_path, username="site", password_file="nope/pw")
    problems = problems_of(path)
    assert problems == {"mqtt.password_file": f"password file {tmp_path / 'nope/pw'} not found"}


def test_an_unreadable_password_file_names_the_field(tmp_path: Path) -> None:
    # A folder where the file should be: unreadable for root too, unlike chmod 000.
    (tmp_path / "pw").mkdir()
    problems = problems_of(site_with(tmp_path, username="site", password_file="pw"))
    assert list(problems) == ["mqtt.password_file"]
    assert problems["mqtt.password_file"].startswith(f"cannot read password file {tmp_path}/pw")


@pytest.mark.parametrize(
    ("content", "problem"), [("\n", "is empty"), ("one\ntwo\n", "has more than one line")]
)
def test_a_password_file_holds_one_password(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "pw").write_text(content, encoding="utf-8")
    problems = problems_of(site_with(tmp_path, username="site", password_file="pw"))
    assert problem in problems["mqtt.password_file"]
    assert "two" not in problems["mqtt.password_file"]


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    path = site_with(tmp_path, username="site", password="inline-one", password_file="pw")
    problems = problems_of(path)
    assert problems == {"mqtt": "Value error, give password or password_file, not both"}
    assert "inline-one" not in str(problems)


def test_a_password_needs_a_username(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    problems = problems_of(site_with(tmp_path, password_file="pw"))
    assert problems == {"mqtt.username": "a password needs a username to log in with"}


# --- the environment ----------------------------------------------------------------------


def test_the_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    assert login(load_site(site_with(tmp_path, username="site"))) == ("site", PASSWORD)


def test_an_empty_environment_variable_is_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "")
    assert login(load_site(site_with(tmp_path, username="site"))) == ("site", None)


@pytest.mark.parametrize("field", ["password", "password_file"])
def test_the_environment_and_the_site_file_are_exclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    (tmp_path / "pw").write_text("from-file", encoding="utf-8")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    value = "inline" if field == "password" else "pw"
    problems = problems_of(site_with(tmp_path, username="site", **{field: value}))
    assert problems == {f"mqtt.{field}": f"{PASSWORD_ENV} is set too; give the password one way"}


# --- secrets stay secret -----------------------------------------------------------------


def test_the_password_is_in_no_repr(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    site = load_site(site_with(tmp_path, username="site", password_file="pw"))
    broker = site.config.mqtt.broker()
    assert broker.password == PASSWORD
    for shown in (repr(site), str(site.config), repr(site.config.mqtt), repr(broker), str(broker)):
        assert PASSWORD not in shown


# --- tls ----------------------------------------------------------------------------------


def test_no_tls_section_is_a_plain_connection(tmp_path: Path) -> None:
    assert load_site(site_with(tmp_path)).config.mqtt.broker().tls is None


def test_tls_files_are_relative_to_the_site_file(tmp_path: Path) -> None:
    tls = {"ca_file": "pki/ca.pem", "cert_file": "pki/me.pem", "key_file": "/abs/me.key"}
    problems = problems_of(site_with(tmp_path, tls=tls))
    assert problems == {
        "mqtt.tls.ca_file": f"cannot read {tmp_path}/pki/ca.pem: No such file or directory",
        "mqtt.tls.cert_file": f"cannot read {tmp_path}/pki/me.pem: No such file or directory",
        "mqtt.tls.key_file": "cannot read /abs/me.key: No such file or directory",
    }


def test_a_ca_file_that_holds_no_certificate_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    problems = problems_of(site_with(tmp_path, tls={"ca_file": "ca.pem"}))
    assert list(problems) == ["mqtt.tls.ca_file"]
    assert problems["mqtt.tls.ca_file"].startswith(f"{tmp_path}/ca.pem holds no CA certificate")


@pytest.mark.parametrize(
    ("given", "missing"), [("cert_file", "key_file"), ("key_file", "cert_file")]
)
def test_a_client_certificate_and_its_key_go_together(
    tmp_path: Path, given: str, missing: str
) -> None:
    problems = problems_of(site_with(tmp_path, tls={given: "client.pem"}))
    assert problems == {
        "mqtt.tls": f"Value error, {given} needs {missing} too: a client certificate and its key"
    }


def test_tls_without_a_ca_file_uses_the_systems_cas(tmp_path: Path) -> None:
    site = load_site(site_with(tmp_path, tls={"check_hostname": False}))
    assert site.config.mqtt.broker().tls == BrokerTls(ca_file=None, check_hostname=False)


def test_an_unknown_tls_key_is_refused(tmp_path: Path) -> None:
    problems = problems_of(site_with(tmp_path, tls={"cafile": "ca.pem"}))
    assert list(problems) == ["mqtt.tls.cafile"]


def test_the_broker_carries_what_the_section_says(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(PASSWORD, encoding="utf-8")
    site = load_site(
        site_with(
            tmp_path, host="broker.lan", port=8883, username="site", password_file="pw", tls={}
        )
    )
    assert site.config.mqtt.broker() == Broker(
        "broker.lan", 8883, "site", PASSWORD, 30, BrokerTls()
    )
