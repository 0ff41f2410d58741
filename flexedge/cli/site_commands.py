"""The operator's commands beyond `status` and `order`: `pause`, `resume`, `safe`, `hold`,
`release`, `commitments`, `devices` and `reports [--follow]`. Each asks the running daemon
over the site's broker (cmd/{command}, the site file's login and TLS), prints the answer,
and exits 1 with the daemon's reason when it refuses."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

from flexedge.cli.exit_codes import FAILED, OK
from flexedge.cli.operator import ask
from flexedge.cli.site_file import host_port, load
from flexedge.mqtt import Broker

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """`90`, `90s`, `15m` or `2h`, in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m or 2h, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def _render(command: str, reply: dict[str, Any]) -> str:
    if command in ("pause", "resume", "safe"):
        ended = reply["ended"]
        return f"mode: {reply['mode']}" + (
            f"\nended early and reported: {', '.join(ended)}" if ended else ""
        )
    if command in ("hold", "release"):
        hold = reply["hold"]
        if hold is None:
            return f"{reply['device']}: released, back to dispatch"
        at = "out of dispatch, not written" if hold["kw"] is None else f"at {hold['kw']} kW"
        return f"{hold['device']}: held {at} until {hold['until']}"
    if command == "commitments":
        lines = [f"open commitments: {len(reply['commitments'])}"]
        lines += [
            f"  {c['id']} {c['ref_type']} {c['window_start']}..{c['window_end']} "
            f"{c['delivered_kwh']}/{c['accepted_kwh']} kWh on {', '.join(c['assets'])}"
            for c in reply["commitments"]
        ]
        return "\n".join(lines)
    if command == "devices":
        lines = []
        for name, d in reply["devices"].items():
            state = "available" if d["available"] else "unavailable"
            line = f"{name:<16} {state} p={d['p_kw']} kW soc={d['soc']} setpoint={d['setpoint_kw']}"
            if d["held"]:
                line += f" held at {d['held']['kw']} kW until {d['held']['until']}"
            if d["failures"]:
                line += f" failing x{d['failures']}, retry at {d['retry_at']}: {d['last_error']}"
            lines.append(line)
        return "\n".join(lines)
    return "\n".join(_report_line(r) for r in reply["reports"])


def _report_line(report: dict[str, Any]) -> str:
    line = (
        f"{report['commitment_id']} {report['status']}: {report['delivered_kwh']} of "
        f"{report['accepted_kwh']} kWh, coverage {report['coverage']}"
    )
    return line + (f" ({report['reason']})" if report.get("reason") else "")


def _command(args: argparse.Namespace) -> int:
    command: str = args.command
    body: dict[str, object] = {}
    if command == "hold":
        body = {"device": args.device, "kw": args.kw, "for_s": args.for_s}
    elif command == "release":
        body = {"device": args.device}
    elif command == "reports":
        body = {"last": args.last}
    site = load(args.config, args.mqtt)
    reply = json.loads(ask(site, command, body, uuid.uuid4().hex, args.timeout))
    if not reply.get("ok"):
        print(f"flexedge: {command} refused: {reply.get('error')}", file=sys.stderr)
        return FAILED
    if args.json:
        print(json.dumps(reply, indent=2))
    elif text := _render(command, reply):
        print(text, flush=True)
    if command == "reports" and args.follow:
        mqtt = site.config.mqtt
        asyncio.run(_follow(mqtt.broker(), f"{mqtt.prefix}/{site.config.site}", args.json))
    return OK


async def _follow(broker: Broker, base: str, as_json: bool) -> None:
    """Print each delivery report the site sends, until interrupted."""
    from flexedge.mqtt import MqttLink

    link = MqttLink.for_broker(broker, client_id=f"flexedge-reports-{uuid.uuid4().hex[:8]}")
    await link.start()
    try:
        link.subscribe(f"{base}/market/delivery", qos=1)
        await link.wait_subscribed()
        print("following delivery reports (Ctrl-C ends)", file=sys.stderr, flush=True)
        while True:
            message = await link.inbound.get()
            link.ack(message)
            report = json.loads(message.payload)
            print(json.dumps(report) if as_json else _report_line(report), flush=True)
    finally:
        await link.stop()


def add_site_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Register the commands on the CLI's subcommand parser."""
    helps = {
        "pause": "stop taking part in the markets (accepted commitments are still delivered)",
        "resume": "take part in the markets again (after pause or safe)",
        "safe": "every device to its safe state now, open commitments ended and reported",
        "hold": "hold a device at a manual setpoint for at most a duration",
        "release": "end a device's hold now",
        "commitments": "list the open commitments",
        "devices": "each device's live readings, availability, last error and back-off",
        "reports": "the latest delivery reports (--follow: and each one as it goes out)",
    }
    for command, help_text in helps.items():
        parser = sub.add_parser(command, help=help_text)
        parser.add_argument("--config", type=Path, required=True, help="site YAML file")
        parser.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
        parser.add_argument("--timeout", type=float, default=5.0)
        parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
        if command in ("hold", "release"):
            parser.add_argument("device", help="device name")
        if command == "hold":
            parser.add_argument("kw", type=float, help="setpoint in kW, site sign (> 0 injects)")
            parser.add_argument(
                "--for", dest="for_s", type=duration, required=True, help="e.g. 90s, 15m, 2h"
            )
        if command == "reports":
            parser.add_argument("--last", type=int, default=10, help="how many (1-1000)")
            parser.add_argument("--follow", action="store_true", help="then wait for more")
        parser.set_defaults(func=_command)


def _prequalify(args: argparse.Namespace) -> int:
    from flexedge.tools.prequalify import PrequalifyRefused, WriteBackRefused, run_prequalify

    site = load(args.config, args.mqtt)
    try:
        return run_prequalify(
            site,
            args.device,
            args.profile,
            args.hold,
            args.out,
            use_daemon=not args.no_daemon,
            write_to=args.config if args.write else None,
        )
    except (PrequalifyRefused, WriteBackRefused) as exc:
        print(f"flexedge prequalify: {exc}", file=sys.stderr)
        return FAILED


def add_prequalify(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "prequalify", help="an activation test of one device before it is offered to a market"
    )
    parser.add_argument("--config", type=Path, required=True, help="site YAML file")
    parser.add_argument("--mqtt", type=host_port, help="override the broker as HOST:PORT")
    parser.add_argument("--device", required=True, help="device name")
    parser.add_argument("--profile", choices=("step", "double-step", "ramp"), default="step")
    parser.add_argument(
        "--hold", type=duration, default=10.0, help="how long each level is held (default 10s)"
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="where the JSON and PNG go")
    parser.add_argument(
        "--no-daemon", action="store_true", help="do not ask the site's daemon (none runs)"
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="put the measured delay and ramp in the site file's `response` for the device",
    )
    parser.set_defaults(func=_prequalify)
