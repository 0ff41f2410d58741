"""The `flexedge` command. The only place that configures logging handlers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from flexedge.cli.config_check import cmd_config_check
from flexedge.cli.exit_codes import INTERRUPTED, exit_code_for
from flexedge.cli.operator import cmd_fault, cmd_order, cmd_status
from flexedge.cli.site_commands import add_prequalify, add_site_commands
from flexedge.cli.site_file import host_port, load
from flexedge.config.loader import DEMO_SITE
from flexedge.errors import FlexedgeError
from flexedge.simulators.market.engines import ENGINES

log = logging.getLogger(__name__)


def _cmd_run(args: argparse.Namespace) -> int:
    from flexedge.controller.daemon.daemon import Daemon

    site = load(args.config, args.mqtt, args.db)

    async def main() -> None:
        await Daemon(site).run()

    asyncio.run(main())
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from flexedge.cli.sim import main_sim

    main_sim(args.config, mqtt=args.mqtt)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flexedge.tools.demo import run_demo

    return run_demo(args.config, scenario=args.scenario, engine=args.engine)


def _cmd_market(args: argparse.Namespace) -> int:
    from flexedge.simulators.market.runner import run_market

    return run_market(
        load(args.config, args.mqtt), args.scenario, grace_s=args.grace, engine=args.engine
    )


def _devices(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected device counts like 10,100,500, got {text!r}")
    return counts


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "latency":
        from flexedge.tools.bench_latency import run_latency_bench

        return run_latency_bench(events=args.events)
    if args.what == "poll":
        from flexedge.tools.bench_poll import run_poll_bench

        return run_poll_bench(devices=args.devices, seconds=args.seconds)
    if args.what == "disk":
        from flexedge.tools.bench_disk import run_disk_bench

        return run_disk_bench(devices=args.devices[0], hours=args.hours)
    return 2


def _cmd_report(args: argparse.Namespace) -> int:
    from flexedge.tools.scorecard import run_report

    return run_report(args.db, plot=args.plot, json_out=args.json, delay_max_s=args.delay_max)


def _version() -> str:
    try:
        return version("flexedge")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class _SubParser(argparse.ArgumentParser):
    """Every subcommand also takes -v, after its name (`flexedge run --config X -v`).
    SUPPRESS: a subcommand without it leaves the value of `flexedge -v run` alone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexedge",
        description=__doc__,
        epilog="exit codes: 0 ok, 1 refused or failed, 2 bad command line, "
        "75 transient (broker, busy port: try again), 78 configuration (fix the site file)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"flexedge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    run = sub.add_parser("run", help="run the controller daemon for a site")
    run.add_argument("--config", type=Path, required=True, help="site YAML file")
    run.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
    run.add_argument("--db", type=Path, help="override the SQLite log path")
    run.set_defaults(func=_cmd_run)

    sim = sub.add_parser("sim", help="serve the simulated devices of a site")
    sim.add_argument("--config", type=Path, required=True, help="site YAML file")
    sim.add_argument(
        "--mqtt",
        type=host_port,
        help="take fault messages (flexedge fault) from this broker, HOST:PORT",
    )
    sim.set_defaults(func=_cmd_sim)

    fault = sub.add_parser("fault", help="switch a fault of a running `sim --mqtt`")
    fault.add_argument(
        "--config", type=Path, help="site YAML file: its broker, credentials and site name"
    )
    fault.add_argument(
        "--mqtt", type=host_port, help="broker as HOST:PORT (with --config: overrides its address)"
    )
    fault.add_argument(
        "--site", help="site name (`site:` of the site file; needed without --config)"
    )
    fault.add_argument("--device", required=True, help="device name")
    flag = argparse.BooleanOptionalAction
    fault.add_argument("--drop", action=flag, help="close its connections, refuse new ones")
    fault.add_argument("--latency", type=float, metavar="S", help="delay each answer (0: off)")
    fault.add_argument(
        "--exception",
        metavar="CODE",
        help="answer with this Modbus exception, e.g. DEVICE_FAILURE; none: off",
    )
    fault.add_argument("--frozen", action=flag, help="reads return the values of now")
    fault.add_argument("--ignore-writes", action=flag, help="acknowledge writes, apply none")
    fault.add_argument("--clear", action="store_true", help="clear every fault (first)")
    fault.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the simulator's confirmation",
    )
    fault.set_defaults(func=cmd_fault)

    demo = sub.add_parser("demo", help="run a self-contained demo with a private broker")
    demo.add_argument("--config", type=Path, default=DEMO_SITE, help="site YAML file")
    demo.add_argument(
        "--scenario",
        default="demo",
        help="market scenario (file or bundled name) to play against it",
    )
    demo.add_argument(
        "--engine",
        choices=ENGINES,
        default="builtin",
        help="the D3A balancing market: the built-in one, or gsy-e's own (see the README)",
    )
    demo.set_defaults(func=_cmd_demo)

    market = sub.add_parser(
        "market",
        help="play a D3A / Power TAC market scenario against "
        "a running site and print settlement and scorecard",
    )
    market.add_argument("--config", type=Path, required=True, help="site YAML file")
    market.add_argument(
        "--scenario",
        required=True,
        help="scenario YAML file, or a bundled one by name (e.g. example-day)",
    )
    market.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
    market.add_argument(
        "--engine",
        choices=ENGINES,
        default="builtin",
        help="the D3A balancing market: the built-in one, or gsy-e's own BalancingMarket and "
        "BalancingAgent (gsy-e must be installed, see the README)",
    )
    market.add_argument(
        "--grace",
        type=float,
        metavar="S",
        help="seconds to wait for reports after the last window (default 5 + 3 control periods)",
    )
    market.set_defaults(func=_cmd_market)

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["latency", "poll", "disk"])
    bench.add_argument("--events", type=int, default=1000, help="latency: control events to send")
    bench.add_argument(
        "--devices",
        type=_devices,
        default=[10, 100, 500],
        help="poll: simulated batteries per run, comma-separated (disk: the first, default 10)",
    )
    bench.add_argument("--seconds", type=float, default=20.0, help="poll: seconds per run")
    bench.add_argument("--hours", type=float, default=6.0, help="disk: hours of ticks to log")
    bench.set_defaults(func=_cmd_bench)

    status = sub.add_parser("status", help="ask a running daemon what it is doing")
    status.add_argument("--config", type=Path, required=True, help="site YAML file")
    status.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
    status.add_argument("--timeout", type=float, default=5.0)
    status.add_argument("--json", action="store_true", help="print the raw JSON answer")
    status.set_defaults(func=cmd_status)

    order = sub.add_parser(
        "order",
        help="replace a tariff's up or down balancing order (by the ratio's sign), or withdraw one",
    )
    order.add_argument("--config", type=Path, required=True, help="site YAML file")
    order.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
    order.add_argument("--tariff", required=True, help="tariff id")
    order.add_argument(
        "--ratio", type=float, help="exercise ratio: (0, 2] the up order, [-1, 0) the down order"
    )
    order.add_argument("--price", type=float, help="price per kWh (default: unchanged)")
    order.add_argument(
        "--direction", choices=("up", "down"), help="refuse a --ratio of the other direction"
    )
    order.add_argument("--withdraw", choices=("up", "down"), help="clear that order")
    order.add_argument("--timeout", type=float, default=5.0)
    order.set_defaults(func=cmd_order)

    add_site_commands(sub)
    add_prequalify(sub)

    report = sub.add_parser("report", help="score every commitment in a SQLite log")
    report.add_argument("--db", type=Path, required=True, help="the SQLite log (read-only)")
    report.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    report.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw requested vs delivered power per asset (needs the plot extra: matplotlib)",
    )
    report.add_argument(
        "--delay-max",
        type=float,
        default=10.0,
        metavar="S",
        help="longest response delay the performance score looks for",
    )
    report.set_defaults(func=_cmd_report)

    config = sub.add_parser("config", help="work with site files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="validate a site file and its register maps; start nothing"
    )
    check.add_argument("file", type=Path, help="site YAML file")
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pymodbus logs every reconnect attempt at error level; the drivers report those already.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # APScheduler logs every job run at info: one line a second per job drowns the log.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except (FlexedgeError, OSError) as exc:
        # A user's mistake or a broker away: one line naming the file, field, port or path.
        log.debug("%s failed", args.command, exc_info=True)
        print(f"flexedge: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
