"""What `flexedge` exits with, so that systemd (RestartPreventExitStatus) and scripts can tell
a mistake in the site's configuration, which a restart cannot mend, from a transient failure,
which one may. The values are the sysexits.h ones."""

from __future__ import annotations

import errno

from flexedge.errors import (
    BrokerError,
    ConfigError,
    DeviceError,
    FlexedgeError,
    PortUnavailable,
)

OK = 0
FAILED = 1  # the command ran and its answer is no (an order refused, a status not ok)
USAGE = 2  # argparse's own code for a bad command line
TEMPFAIL = 75  # EX_TEMPFAIL: broker down or refusing us, a port still busy; restart
CONFIG = 78  # EX_CONFIG: site file, register map, log path or address wrong; do not restart
INTERRUPTED = 130

# Errors of a path or address that stay until someone changes the file or the machine.
_LASTING_OS_ERRORS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.EADDRNOTAVAIL,
        errno.EINVAL,
    }
)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error that ends a command."""
    if isinstance(exc, ConfigError):
        return CONFIG
    if isinstance(exc, PortUnavailable):
        return exit_code_for(exc.cause)
    if isinstance(exc, BrokerError):
        return TEMPFAIL
    if isinstance(exc, OSError):
        # A busy port is most often the previous run still letting go of it.
        return CONFIG if exc.errno in _LASTING_OS_ERRORS else TEMPFAIL
    if isinstance(exc, DeviceError):
        return TEMPFAIL
    if isinstance(exc, FlexedgeError):
        # Refused input of a one-off command (a report of a file that is no log, a missing
        # extra): nothing a restart is about, told apart as before.
        return USAGE
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return FAILED
