"""`./flexedge.sh install` (flexedge/config/install/install.sh), staged with `--root` so that
it runs without root and changes nothing outside the staging tree: a real virtualenv with
flexedge built from this checkout, the site file, the state directory and the unit, and the
useradd/chown/systemctl lines it would run. The staged unit, its paths moved into the staging
tree, passes `systemd-analyze verify` and scores at most 3.0."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from flexedge.config.loader import EXAMPLE_SITE, load_site
from tests.support.systemd_analyze import MAX_EXPOSURE, assert_verifies, exposure

REPO = EXAMPLE_SITE.parents[3]
INSTALLER = REPO / "flexedge" / "config" / "install" / "install.sh"
SHIPPED_UNIT = REPO / "flexedge" / "config" / "systemd" / "flexedge.service"
# The first install builds a wheel and fills a virtualenv from pip's cache (about 15 s here);
# a cold cache downloads the dependencies.
INSTALL_TIMEOUT_S = 240


@dataclass(frozen=True)
class Staged:
    root: Path
    output: str

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def site(self) -> Path:
        return self.path("/etc/flexedge/site.yaml")

    @property
    def flexedge(self) -> Path:
        return self.path("/opt/flexedge/.venv/bin/flexedge")

    @property
    def unit(self) -> Path:
        return self.path("/etc/systemd/system/flexedge.service")


def run_installer(root: Path, *args: str) -> str:
    """Run install.sh with --root; its output (stdout and stderr), or a failure that shows it."""
    assert root != Path("/")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        ["bash", str(INSTALLER), *args, "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S - 20,
        env=env,
        cwd=REPO,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Staged:
    root = tmp_path_factory.mktemp("staged-root")
    return Staged(root, run_installer(root, "install"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_install_stages_the_venv_the_site_file_the_state_directory_and_the_unit(
    staged: Staged,
) -> None:
    shown = subprocess.run(
        [str(staged.flexedge), "--version"], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"flexedge {version('flexedge')}"
    # Not editable: the installed package is a copy in the venv, not this checkout.
    where = subprocess.run(
        [str(staged.flexedge.parent / "python"), "-c", "import flexedge; print(flexedge.__file__)"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=staged.root,
    )
    assert where.stdout.startswith(str(staged.path("/opt/flexedge/.venv/lib"))), where

    # The example, with its log in the unit's state directory; readable by group flexedge only.
    site = load_site(staged.site)
    assert site.config.site == load_site(EXAMPLE_SITE).config.site
    assert site.log_db_path == Path("/var/lib/flexedge/flexedge.sqlite")
    assert mode(staged.site) == 0o640
    assert mode(staged.path("/etc/flexedge")) == 0o750
    assert mode(staged.path("/var/lib/flexedge")) == 0o750
    assert staged.unit.read_text(encoding="utf-8") == SHIPPED_UNIT.read_text(encoding="utf-8")
    # The operator's `flexedge`: a link to where the venv is on the gateway.
    link = staged.path("/usr/local/bin/flexedge")
    assert os.readlink(link) == "/opt/flexedge/.venv/bin/flexedge"

    # What needs root is printed, not run; enabled, not started.
    for line in (
        "would run: useradd --system --user-group --home-dir /var/lib/flexedge",
        "--shell /usr/sbin/nologin",
        "would run: usermod --append --groups dialout flexedge",
        f"would run: chown root:flexedge {staged.site}",
        f"would run: chown flexedge:flexedge {staged.path('/var/lib/flexedge')}",
        "would run: systemctl daemon-reload",
        "would run: systemctl enable flexedge.service",
    ):
        assert line in staged.output, staged.output
    assert "systemctl restart" not in staged.output
    assert f"{staged.site}: OK" in staged.output


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_installed_unit_verifies_and_scores_at_most_3(staged: Staged, tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at the staged one.
    text = staged.unit.read_text(encoding="utf-8")
    assert "ExecStart=/opt/flexedge/.venv/bin/flexedge run --config /etc/flexedge/site.yaml" in text
    unit = tmp_path / "flexedge.service"
    unit.write_text(
        text.replace("/opt/flexedge/", f"{staged.path('/opt/flexedge')}/"), encoding="utf-8"
    )
    assert_verifies(unit)
    assert exposure(unit) <= MAX_EXPOSURE


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_a_second_install_upgrades_flexedge_and_keeps_an_edited_site_file(
    staged: Staged,
) -> None:
    edited = staged.site.read_text(encoding="utf-8") + "# edited by the operator\n"
    staged.site.write_text(edited, encoding="utf-8")
    # A stand-in for an older version: the installed package's __init__.py, changed.
    found = sorted(staged.path("/opt/flexedge/.venv/lib").glob("python3*/site-packages/flexedge"))
    assert len(found) == 1, found
    init = found[0] / "__init__.py"
    shipped = init.read_text(encoding="utf-8")
    init.write_text(shipped + "OLD = True\n", encoding="utf-8")

    output = run_installer(staged.root, "install", "--start")

    assert staged.site.read_text(encoding="utf-8") == edited
    assert f"kept the existing {staged.site}" in output
    assert init.read_text(encoding="utf-8") == shipped
    # --start restarts: after an upgrade the running daemon would be the old version.
    assert "would run: systemctl restart flexedge.service" in output


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_uninstall_removes_the_unit_and_the_venv_and_keeps_the_site_file_and_the_log(
    staged: Staged,
) -> None:
    log = staged.path("/var/lib/flexedge/flexedge.sqlite")
    log.write_bytes(b"the site's log")
    site = staged.site.read_bytes()

    output = run_installer(staged.root, "uninstall")

    assert "would run: systemctl disable --now flexedge.service" in output
    assert not staged.unit.exists()
    assert not staged.path("/opt/flexedge").exists()
    assert not staged.path("/usr/local/bin/flexedge").is_symlink()
    assert staged.site.read_bytes() == site
    assert log.read_bytes() == b"the site's log"
    # Twice is fine too.
    run_installer(staged.root, "uninstall")
