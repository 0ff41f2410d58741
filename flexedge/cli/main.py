"""The `flexedge` command. The only place that configures logging handlers."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from flexedge.config.loader import DEMO_SITE, Site, load_site
from flexedge.errors import FlexedgeError
from flexedge.simulators.market.engines import ENGINES

log = logging.getLogger(__name__)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _load(path: Path, mqtt: tuple[str, int] | None = None, db: Path | None = None) -> Site:
    overrides: dict[str, object] = {}
    if mqtt is not None or db is not None:
        import yaml

        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if mqtt is not None:
            overrides["mqtt"] = {**(raw.get("mqtt") or {}), "host": mqtt[0], "port": mqtt[1]}
        if db is not None:
            overrides["log_db"] = str(db.resolve())
    return load_site(path, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from flexedge.controller.daemon.daemon import Daemon

    site = _load(args.config, args.mqtt, args.db)

    async def main() -> None:
        await Daemon(site).run()

    asyncio.run(main())
    return 0


def _cmd_sim(args: argparse.Namespace) -> int:
    from flexedge.cli.sim import main_sim

    main_sim(args.config, mqtt=args.mqtt)
    return 0


def _cmd_fault(args: argparse.Namespace) -> int:
    from flexedge.simulators.devices.fault_client import fault_message, main_fault

    message = fault_message(
        drop=args.drop,
        latency_s=args.latency,
        exception=args.exception,
        frozen=args.frozen,
        ignore_writes=args.ignore_writes,
        clear=args.clear,
    )
    return main_fault(args.mqtt, args.site, args.device, message, timeout=args.timeout)


def _cmd_demo(args: argparse.Namespace) -> int:
    from flexedge.tools.demo import run_demo

    return run_demo(args.config, scenario=args.scenario, engine=args.engine)


def _cmd_market(args: argparse.Namespace) -> int:
    from flexedge.simulators.market.runner import run_market

    return run_market(
        _load(args.config, args.mqtt), args.scenario, grace_s=args.grace, engine=args.engine
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
    return 2


def _cmd_status(args: argparse.Namespace) -> int:
    from flexedge.controller.daemon.commands import render_status
    from flexedge.mqtt import request

    site = _load(args.config, args.mqtt)
    cfg = site.config
    base = f"{cfg.mqtt.prefix}/{cfg.site}"
    reply = asyncio.run(
        request(
            cfg.mqtt.host,
            cfg.mqtt.port,
            f"{base}/cmd/status",
            b"{}",
            f"{base}/cmd-reply/{id(args)}",
            timeout=args.timeout,
        )
    )
    body = json.loads(reply)
    print(json.dumps(body, indent=2) if args.json else render_status(body))
    return 0 if body.get("ok") else 1


def _cmd_order(args: argparse.Namespace) -> int:
    from flexedge.mqtt import request

    site = _load(args.config, args.mqtt)
    cfg = site.config
    base = f"{cfg.mqtt.prefix}/{cfg.site}"
    body: dict[str, object] = {"tariff_id": args.tariff}
    for key, value in (
        ("exercise_ratio", args.ratio),
        ("price_per_kwh", args.price),
        ("direction", args.direction),
        ("withdraw", args.withdraw),
    ):
        if value is not None:
            body[key] = value
    reply = json.loads(
        asyncio.run(
            request(
                cfg.mqtt.host,
                cfg.mqtt.port,
                f"{base}/cmd/set-order",
                json.dumps(body).encode(),
                f"{base}/cmd-reply/{id(args)}",
                timeout=args.timeout,
            )
        )
    )
    if reply.get("ok"):
        what = (
            "withdrawn"
            if reply["exercise_ratio"] is None
            else f"exercise_ratio {reply['exercise_ratio']}, price {reply['price_per_kwh']} per kWh"
        )
        print(f"{reply['direction']} order of {reply['tariff_id']}: {what}")
        for order in reply["orders"]:
            print(
                f"  in force: {order['direction']} exercise_ratio {order['exercise_ratio']}, "
                f"price {order['price_per_kwh']} per kWh"
            )
        return 0
    print(f"flexedge: order refused: {reply.get('error')}", file=sys.stderr)
    return 1


def _cmd_report(args: argparse.Namespace) -> int:
    from flexedge.tools.scorecard import run_report

    return run_report(args.db, plot=args.plot, json_out=args.json, delay_max_s=args.delay_max)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexedge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the controller daemon for a site")
    run.add_argument("--config", type=Path, required=True, help="site YAML file")
    run.add_argument("--mqtt", type=_host_port, help="override the broker as HOST:PORT")
    run.add_argument("--db", type=Path, help="override the SQLite log path")
    run.set_defaults(func=_cmd_run)

    sim = sub.add_parser("sim", help="serve the simulated devices of a site")
    sim.add_argument("--config", type=Path, required=True, help="site YAML file")
    sim.add_argument(
        "--mqtt",
        type=_host_port,
        help="take fault messages (flexedge fault) from this broker, HOST:PORT",
    )
    sim.set_defaults(func=_cmd_sim)

    fault = sub.add_parser("fault", help="switch a fault of a running `sim --mqtt`")
    fault.add_argument("--mqtt", type=_host_port, required=True, help="broker as HOST:PORT")
    fault.add_argument("--site", required=True, help="site name (`site:` of the site file)")
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
    fault.set_defaults(func=_cmd_fault)

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
    market.add_argument("--mqtt", type=_host_port, help="override the broker as HOST:PORT")
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
    bench.add_argument("what", choices=["latency", "poll"])
    bench.add_argument("--events", type=int, default=1000, help="latency: control events to send")
    bench.add_argument(
        "--devices",
        type=_devices,
        default=[10, 100, 500],
        help="poll: simulated batteries per run, comma-separated",
    )
    bench.add_argument("--seconds", type=float, default=20.0, help="poll: seconds per run")
    bench.set_defaults(func=_cmd_bench)

    status = sub.add_parser("status", help="ask a running daemon what it is doing")
    status.add_argument("--config", type=Path, required=True, help="site YAML file")
    status.add_argument("--mqtt", type=_host_port, help="override the broker as HOST:PORT")
    status.add_argument("--timeout", type=float, default=5.0)
    status.add_argument("--json", action="store_true", help="print the raw JSON answer")
    status.set_defaults(func=_cmd_status)

    order = sub.add_parser(
        "order",
        help="replace a tariff's up or down balancing order (by the ratio's sign), or withdraw one",
    )
    order.add_argument("--config", type=Path, required=True, help="site YAML file")
    order.add_argument("--mqtt", type=_host_port, help="override the broker as HOST:PORT")
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
    order.set_defaults(func=_cmd_order)

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
    except FlexedgeError as exc:
        print(f"flexedge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
