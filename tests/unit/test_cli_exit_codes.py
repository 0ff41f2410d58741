"""The command line's own rules: which error exits with which code, where -v may stand."""

from __future__ import annotations

import errno

import pytest

from flexedge.cli.exit_codes import CONFIG, FAILED, TEMPFAIL, USAGE, exit_code_for
from flexedge.cli.main import build_parser
from flexedge.errors import (
    BrokerError,
    ConfigError,
    ConfigProblems,
    DeviceUnavailable,
    FlexedgeError,
    PortUnavailable,
)
from flexedge.mqtt import RequestTimeout


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("site.yaml", "log_db", "cannot open"), CONFIG),
        (ConfigProblems([ConfigError("a", "b", "c"), ConfigError("a", "d", "e")]), CONFIG),
        (BrokerError("127.0.0.1:1883 refused the connection: Not authorized"), TEMPFAIL),
        (RequestTimeout("no response"), TEMPFAIL),
        (DeviceUnavailable("battery-1", "timeout"), TEMPFAIL),
        (PortUnavailable("sim", "h", 1, OSError(errno.EADDRINUSE, "in use")), TEMPFAIL),
        (PortUnavailable("sim", "h", 1, OSError(errno.EADDRNOTAVAIL, "no such")), CONFIG),
        (PortUnavailable("sim", "h", 80, OSError(errno.EACCES, "denied")), CONFIG),
        (OSError(errno.ENOENT, "missing"), CONFIG),
        (OSError(errno.EROFS, "read-only"), CONFIG),
        (OSError(errno.ECONNREFUSED, "refused"), TEMPFAIL),
        (FlexedgeError("not a flexedge log"), USAGE),
        (ValueError("a bug"), FAILED),
    ],
)
def test_exit_code_for(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_config_problems_reads_as_its_first_and_keeps_them_all() -> None:
    problems = [ConfigError("s.yaml", "a", "bad"), ConfigError("s.yaml", "b", "worse")]
    error = ConfigProblems(problems)
    assert str(error) == "s.yaml: a: bad (and 1 more problems)"
    assert error.problems == problems
    assert str(ConfigProblems(problems[:1])) == "s.yaml: a: bad"


def test_port_unavailable_names_what_and_where() -> None:
    error = PortUnavailable("simulated battery-1", "127.0.0.1", 5020, OSError(98, "in use"))
    assert str(error) == "simulated battery-1: cannot listen on 127.0.0.1:5020: in use"


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["run", "--config", "s.yaml"], False),
        (["-v", "run", "--config", "s.yaml"], True),
        (["run", "--config", "s.yaml", "-v"], True),
        (["status", "--config", "s.yaml", "--verbose"], True),
        (["config", "check", "s.yaml", "-v"], True),
    ],
)
def test_verbose_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"flexedge {version('flexedge')}"


def test_fault_takes_a_site_file_instead_of_mqtt_and_site() -> None:
    args = build_parser().parse_args(["fault", "--config", "s.yaml", "--device", "b", "--clear"])
    assert (str(args.config), args.mqtt, args.site) == ("s.yaml", None, None)
