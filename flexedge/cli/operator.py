"""The commands an operator sends to a running site over its broker: `status`, `order`,
`fault`. Each connects with the site file's mqtt settings (MqttSettings.broker()): its login,
wherever the password comes from, and its TLS."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from flexedge.cli.exit_codes import FAILED, OK, USAGE
from flexedge.cli.site_file import load
from flexedge.config.loader import Site
from flexedge.mqtt import Broker


def ask(site: Site, command: str, body: dict[str, object], reply_to: str, timeout: float) -> bytes:
    from flexedge.mqtt import request

    cfg = site.config
    base = f"{cfg.mqtt.prefix}/{cfg.site}"
    return asyncio.run(
        request(
            cfg.mqtt.broker(),
            f"{base}/cmd/{command}",
            json.dumps(body).encode(),
            f"{base}/cmd-reply/{reply_to}",
            timeout=timeout,
        )
    )


def cmd_status(args: argparse.Namespace) -> int:
    from flexedge.controller.daemon.commands import render_status

    body = json.loads(ask(load(args.config, args.mqtt), "status", {}, str(id(args)), args.timeout))
    print(json.dumps(body, indent=2) if args.json else render_status(body))
    return OK if body.get("ok") else FAILED


def cmd_order(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"tariff_id": args.tariff}
    for key, value in (
        ("exercise_ratio", args.ratio),
        ("price_per_kwh", args.price),
        ("direction", args.direction),
        ("withdraw", args.withdraw),
    ):
        if value is not None:
            body[key] = value
    site = load(args.config, args.mqtt)
    reply = json.loads(ask(site, "set-order", body, str(id(args)), args.timeout))
    if reply.get("ok"):
        print(render_order_reply(reply))
        return OK
    print(f"flexedge: order refused: {reply.get('error')}", file=sys.stderr)
    return FAILED


def render_order_reply(reply: dict[str, Any]) -> str:
    """What the daemon now holds and publishes for the tariff's direction, and, when the
    published ratio is not the one asked for, that it was cut to what the assets can do."""
    asked, published = reply["exercise_ratio"], reply["published_ratio"]
    what = (
        "withdrawn"
        if asked is None
        else f"exercise_ratio {asked}, price {reply['price_per_kwh']} per kWh"
    )
    lines = [f"{reply['direction']} order of {reply['tariff_id']}: {what}"]
    if asked is not None:
        if published is None:
            lines.append("  published: nothing (no order of it in force: the assets offer none)")
        elif published != asked:
            lines.append(
                f"  published: exercise_ratio {published}, not {asked}: "
                "cut to what the tariff's assets can do now"
            )
        else:
            lines.append(f"  published: exercise_ratio {published}")
    for order in reply["orders"]:
        lines.append(
            f"  in force: {order['direction']} exercise_ratio {order['exercise_ratio']}, "
            f"price {order['price_per_kwh']} per kWh"
        )
    return "\n".join(lines)


def cmd_fault(args: argparse.Namespace) -> int:
    from flexedge.simulators.devices.fault_client import fault_message, main_fault

    if args.config is not None:
        cfg = load(args.config, args.mqtt).config
        broker, site = cfg.mqtt.broker(), args.site or cfg.site
    elif args.mqtt is not None and args.site is not None:
        broker, site = Broker(*args.mqtt), args.site
    else:
        print("flexedge fault: give --config FILE, or both --mqtt and --site", file=sys.stderr)
        return USAGE
    message = fault_message(
        drop=args.drop,
        latency_s=args.latency,
        exception=args.exception,
        frozen=args.frozen,
        ignore_writes=args.ignore_writes,
        clear=args.clear,
    )
    return main_fault(broker, site, args.device, message, timeout=args.timeout)
