"""Hot swap under load: what a swap costs the messages flowing through the flow.

Flow: python -> node -> python, every module stateful; the middle one is swapped.

- ``swap_latency``: a producer at 5,000 msg/s (stamps each message with a clock read);
  end-to-end latency p50/p99/max in steady state, then during 100 swaps, one every 20 ms,
  alternately changing the middle module's code and adding/removing a tap module (a
  rewiring: the pause-and-drain path). "Added latency" is the storm's figure minus
  steady state's. Also each swap's pause (no deliveries) and duration, p50/p99/max.
- ``swap_throughput``: a producer as fast as backpressure allows; msgs/s over 2 s of
  steady state, then over 2 s of swaps back to back (code swaps; then runtime moves of
  the middle module node <-> python, each starting a runtime process).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from fifoflow.flows import parse_flow
from fifoflow.runner import open_runner
from fifoflow.runtimes.registry import discover

RUNTIMES = discover()

FIRST = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return msg\n"
LAST = "def handle(msg, ctx):\n    ctx.state['n'] = ctx.state.get('n', 0) + 1\n    return msg\n"


def _mid(version: int, runtime: str = "node") -> dict[str, Any]:
    if runtime == "node":
        code = (
            "exports.handle = (msg, ctx) => {\n"
            "  ctx.state.n = (ctx.state.n || 0) + 1;\n"
            f"  msg.v = {version};\n"
            "  return msg;\n"
            "};\n"
        )
    else:
        code = (
            "def handle(msg, ctx):\n"
            "    ctx.state['n'] = ctx.state.get('n', 0) + 1\n"
            f"    msg['v'] = {version}\n"
            "    return msg\n"
        )
    return {"id": "mid", "runtime": runtime, "code": code}


def _flow(mid: dict[str, Any], *, tap: bool = False) -> Any:
    doc: dict[str, Any] = {
        "fifoflow": 1,
        "id": "swapbench",
        "modules": [
            {"id": "first", "runtime": "python", "code": FIRST},
            mid,
            {"id": "last", "runtime": "python", "code": LAST},
        ],
        "wires": ["first.out -> mid.in", "mid.out -> last.in"],
    }
    if tap:
        doc["modules"].append(
            {"id": "tap", "runtime": "node", "code": "exports.handle = () => null;\n"}
        )
        doc["wires"].append("first.out -> tap.in")
    return parse_flow(doc, base_dir=None, runtimes=RUNTIMES.keys())


def _pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"p50": pct(0.5), "p99": pct(0.99), "max": ordered[-1], "n": len(ordered)}


async def _latency(swaps: int, rate: float = 5000.0, steady_s: float = 2.0) -> dict[str, Any]:
    lat: list[float] = []

    async def sink(module: str, port: str, msgs: list[Any]) -> None:
        now = time.perf_counter()
        lat.extend(now - m["t"] for m in msgs)

    async with open_runner() as runner:
        await runner.add_or_update_flow(_flow(_mid(0)))
        runner.set_output_sink("swapbench", sink)
        await runner.start_flow("swapbench")

        async def produce(stop: trio.Event) -> None:
            batch = 5
            interval = batch / rate
            next_at = trio.current_time()
            while not stop.is_set():
                now = time.perf_counter()
                await runner.inject("swapbench", "first", "in", [{"t": now}] * batch)
                next_at += interval
                await trio.sleep_until(next_at)

        stop = trio.Event()
        paused: list[float] = []
        durations: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, stop)
            await trio.sleep(0.5)  # warm-up
            lat.clear()
            await trio.sleep(steady_s)
            steady = list(lat)
            lat.clear()
            started = time.perf_counter()
            next_at = trio.current_time()
            for v in range(1, swaps + 1):
                # Every 20 ms, alternately a code swap (no pause) and a rewiring swap
                # (a tap module added or removed: the pause-and-drain path).
                report = (await runner.apply_flow(_flow(_mid(v), tap=v % 2 == 1))).report
                assert report is not None
                paused.append(report["pausedMs"])
                durations.append(report["durationMs"])
                next_at += 0.02
                await trio.sleep_until(next_at)
            storm_s = time.perf_counter() - started
            await trio.sleep(0.2)  # let the last swap's messages arrive
            storm = list(lat)
            stop.set()
        await runner.wait_idle("swapbench")
    s, t = _pcts([x * 1e3 for x in steady]), _pcts([x * 1e3 for x in storm])
    return {
        "rate_msg_s": rate,
        "swaps": swaps,
        "storm_seconds": storm_s,
        "steady_ms": s,
        "storm_ms": t,
        "added_ms": {k: t[k] - s[k] for k in ("p50", "p99", "max")},
        "paused_ms": _pcts(paused),
        "duration_ms": _pcts(durations),
    }


async def _throughput(swaps: int, moves: bool, seconds: float, interval: float) -> dict[str, float]:
    seen = 0

    async def sink(module: str, port: str, msgs: list[Any]) -> None:
        nonlocal seen
        seen += len(msgs)

    async with open_runner() as runner:
        await runner.add_or_update_flow(_flow(_mid(0)))
        runner.set_output_sink("swapbench", sink)
        await runner.start_flow("swapbench")
        batch = [{"x": 1}] * 1000

        async def produce() -> None:
            while True:
                await runner.inject("swapbench", "first", "in", batch)

        count = 0

        async def storm() -> None:
            nonlocal count
            next_at = trio.current_time()
            while count < swaps:
                count += 1
                runtime = ("python" if count % 2 else "node") if moves else "node"
                await runner.apply_flow(_flow(_mid(count, runtime)))
                next_at += interval
                await trio.sleep_until(next_at)

        async def phase(with_swaps: bool) -> float:
            nonlocal seen
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                await trio.sleep(0.3)  # warm-up: queues fill, rate settles
                if with_swaps:
                    nursery.start_soon(storm)
                seen, start = 0, time.perf_counter()
                await trio.sleep(seconds)
                rate = seen / (time.perf_counter() - start)
                nursery.cancel_scope.cancel()
            await runner.wait_idle("swapbench")
            return rate

        steady = await phase(False)
        during = await phase(True)
    return {
        "steady_msg_s": steady,
        "storm_msg_s": during,
        "ratio": during / steady,
        "swaps_done": count,
    }


def run(swaps: int = 100, quick: bool = False) -> dict[str, Any]:
    latency = trio.run(_latency, swaps, 5000.0, 1.0 if quick else 2.0)
    seconds = 1.0 if quick else 2.0
    return {
        "swap_latency": latency,
        # 100 swaps, one per 20 ms, inside the measured window (the storm of swap_latency)
        "swap_throughput_code": trio.run(_throughput, swaps, False, seconds, 0.02),
        "swap_throughput_moves": trio.run(_throughput, swaps, True, seconds, 0.02),
        # as many as fit, back to back
        "swap_throughput_code_nonstop": trio.run(_throughput, 100_000, False, seconds, 0.0),
        "swap_throughput_moves_nonstop": trio.run(_throughput, 100_000, True, seconds, 0.0),
    }


def print_report(result: dict[str, Any]) -> None:
    lat = result["swap_latency"]
    s, t, a = lat["steady_ms"], lat["storm_ms"], lat["added_ms"]
    print()
    print(
        f"hot swap: {lat['swaps']} swaps (code / rewiring, one per 20 ms) at {lat['rate_msg_s']:,.0f} msg/s "
        f"(storm lasted {lat['storm_seconds']:.2f} s)"
    )
    print(
        f"  end-to-end latency steady   p50 {s['p50']:.2f} ms  p99 {s['p99']:.2f} ms  max {s['max']:.2f} ms"
    )
    print(
        f"  end-to-end latency storm    p50 {t['p50']:.2f} ms  p99 {t['p99']:.2f} ms  max {t['max']:.2f} ms"
    )
    met = "met" if a["p99"] <= 5 else "NOT met"
    print(
        f"  added by swapping           p50 {a['p50']:.2f} ms  p99 {a['p99']:.2f} ms  max {a['max']:.2f} ms"
        f"   target p99 <= 5 ms {met}"
    )
    p, d = lat["paused_ms"], lat["duration_ms"]
    print(
        f"  pause per swap              p50 {p['p50']:.2f} ms  p99 {p['p99']:.2f} ms  max {p['max']:.2f} ms"
    )
    print(
        f"  swap duration               p50 {d['p50']:.2f} ms  p99 {d['p99']:.2f} ms  max {d['max']:.2f} ms"
    )
    for name, label in (
        ("swap_throughput_code", "code swaps, 1 per 20 ms"),
        ("swap_throughput_moves", "runtime moves, 1 per 20 ms"),
        ("swap_throughput_code_nonstop", "code swaps, back to back"),
        ("swap_throughput_moves_nonstop", "runtime moves, back to back"),
    ):
        fig = result[name]
        target = ""
        if not name.endswith("nonstop"):
            target = f"   target >= 0.80 {'met' if fig['ratio'] >= 0.8 else 'NOT met'}"
        print(
            f"  throughput, {label:<28} {fig['storm_msg_s']:>10,.0f} msg/s vs steady {fig['steady_msg_s']:>10,.0f}"
            f"  = {fig['ratio']:.2f}x  ({fig['swaps_done']} swaps){target}"
        )


if __name__ == "__main__":
    print_report(run())
