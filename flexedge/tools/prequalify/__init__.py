"""`flexedge prequalify`: a standard activation test of one device (runner.py drives it,
analysis.py measures it); this module prints the table and writes the JSON record and plot."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flexedge.config.loader import Site
from flexedge.tools.prequalify.analysis import Result, analyse, response_of
from flexedge.tools.prequalify.runner import SAMPLE_S, PrequalifyRefused, Run, run_profile
from flexedge.tools.prequalify.write_back import WriteBackRefused, write_response

__all__ = ["PrequalifyRefused", "WriteBackRefused", "render", "run_prequalify"]


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def render(run: Run, result: Result) -> str:
    lines = [
        f"prequalify {run.device} ({run.kind}), profile {run.profile_name}: {run.daemon}",
        f"{'at':>7} {'from kW':>8} {'to kW':>8} {'delay':>8} {'to 90 %':>9} {'to 100 %':>9} "
        f"{'overshoot':>9}",
    ]
    for step in result.steps:
        lines.append(
            f"{step.at_s:>6.1f}s {step.from_kw:>8.2f} {step.to_kw:>8.2f} {_s(step.delay_s):>8} "
            f"{_s(step.to_90_s):>9} {_s(step.to_100_s):>9} {step.overshoot_share:>8.1%}"
        )
    errors = result.tracking_error_kw
    mean = sum(errors) / len(errors) if errors else float("nan")
    lines.append(
        f"tracking error per second: mean {mean:.3f} kW, worst {max(errors, default=0):.3f} kW"
    )
    for label, (target, measured) in (("up", result.up_kwh), ("down", result.down_kwh)):
        if target:
            lines.append(
                f"energy {label}: {measured:+.5f} kWh against the profile's {target:+.5f} kWh "
                f"({measured / target:.1%})"
            )
    return "\n".join(lines)


def record(run: Run, result: Result) -> dict[str, Any]:
    return {
        "device": run.device,
        "kind": run.kind,
        "profile": run.profile_name,
        "daemon": run.daemon,
        "targets": run.profile,
        "samples": run.samples,
        **asdict(result),
    }


def _plot(run: Run, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from flexedge.tools.prequalify.analysis import target_at

    fig, ax = plt.subplots(figsize=(8, 3.5))
    times = [t for t, _ in run.samples]
    ax.step(times, [target_at(run.profile, t) for t in times], where="post", label="target")
    ax.plot(times, [p for _, p in run.samples], label="response")
    ax.set_xlabel("s")
    ax.set_ylabel("kW (site sign)")
    ax.set_title(f"{run.device}: {run.profile_name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def run_prequalify(
    site: Site,
    device: str,
    profile: str,
    hold_s: float,
    out: Path,
    use_daemon: bool = True,
    write_to: Path | None = None,
) -> int:
    """Run the test, print and record it; with `write_to` (the site file), put the measured
    response figures in it. WriteBackRefused (after the record is written) when they cannot."""
    run = asyncio.run(run_profile(site, device, profile, hold_s, use_daemon))
    result = analyse(run.profile, run.samples)
    print(render(run, result))
    figures = response_of(result, SAMPLE_S)
    if figures is None:
        print("response figures: none (a step never got to 90 %)")
    else:
        ramp = "at once" if figures.ramp_kw_per_s is None else f"{figures.ramp_kw_per_s:g} kW/s"
        print(f"response figures: delay {figures.delay_s:g} s, ramp {ramp}")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"prequalify-{device}-{profile}"
    stem.with_suffix(".json").write_text(json.dumps(record(run, result), indent=1) + "\n")
    written = [str(stem.with_suffix(".json"))]
    if _plot(run, stem.with_suffix(".png")):
        written.append(str(stem.with_suffix(".png")))
    else:
        print("(no plot: matplotlib is not installed)", file=sys.stderr)
    print("wrote " + ", ".join(written))
    if write_to is not None:
        if figures is None:
            raise WriteBackRefused(f"{device} did not follow every step: nothing to write back")
        note = f"measured by flexedge prequalify --profile {profile}, {time.strftime('%Y-%m-%d')}"
        line = write_response(write_to, device, figures, note)
        print(
            f"wrote {line!r} for {device} to {write_to}: "
            "the daemon plans with it from its next start"
        )
    return 0
