"""Benchmarks of the go runtime: throughput of built hosts, and what building costs.

- ``go_same_chain``: three go modules in one host (go -> go wires stay inside it), msg/s,
  beside three python modules in one host (``py_same_chain``, same run).
- ``py_go_py``: python -> go -> python through the runner, msg/s, beside the same chain
  with node in the middle (``py_node_py``, measured in the same run).
- ``go_build_cold``: seconds to build a host binary with an empty cache (Go's own build
  cache included: the standard library packages the host uses are compiled too).
- ``go_build_changed``: seconds to build after one module's source changed (warm Go
  cache: that package is compiled, the binary linked).
- ``go_start_cached``: seconds from ``start_flow`` to running for a flow whose binary is
  in the cache (no build), beside the same flow with a python module instead.
- ``go_hop_latency`` / ``go_hop_latency_no_direct``: one hop python -> go and go ->
  python (each stamp from its own process's wall clock, CLOCK_REALTIME on both sides),
  and two hops python -> go -> python (one clock), p50/p99/max at a light fixed rate,
  over direct channels and through the runner (``--no-direct``), interleaved.

Skipped (``None``) without a Go toolchain.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from fifoflow.flows import parse_flow
from fifoflow.runner import RunnerConfig, open_runner
from fifoflow.runtimes.gobuild import GoSource, ensure_binary, find_go
from fifoflow.runtimes.registry import discover

GO_ID = 'package id\n\nimport "fifoflow"\n\nfunc Handle(msg any, ctx *fifoflow.Ctx) (any, error) { return msg, nil }\n'
PY_ID = "def handle(msg, ctx):\n    return msg\n"
NODE_ID = "exports.handle = (msg, ctx) => msg;\n"

# a stamp: the first module of a flow returns {t0}, the next one adds t1 (microseconds
# of the wall clock: time.time_ns() in python, time.Now() in go, the same clock)
PY_STAMP = (
    "import time\n"
    "def handle(msg, ctx):\n"
    "    now = time.time_ns() // 1000\n"
    "    return {'t0': msg['t0'], 't1': now} if isinstance(msg, dict) else {'t0': now}\n"
)
GO_STAMP = (
    "package stamp\n\n"
    'import (\n\t"time"\n\n\t"fifoflow"\n)\n\n'
    "func Handle(msg any, ctx *fifoflow.Ctx) (any, error) {\n"
    "\tnow := float64(time.Now().UnixMicro())\n"
    "\tif m, ok := msg.(map[string]any); ok {\n"
    '\t\treturn map[string]any{"t0": m["t0"], "t1": now}, nil\n'
    "\t}\n"
    '\treturn map[string]any{"t0": now}, nil\n'
    "}\n"
)

Throughput = Callable[..., Awaitable[list[float]]]


def _flow(fid: str, modules: list[tuple[str, str, str]], wires: list[str]) -> Any:
    doc = {
        "fifoflow": 1,
        "id": fid,
        "modules": [{"id": m, "runtime": rt, "code": code} for m, rt, code in modules],
        "wires": wires,
    }
    return parse_flow(doc, base_dir=None, runtimes=discover().keys())


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _start_time(config: RunnerConfig, flow: Any, rounds: int) -> list[float]:
    values = []
    for _ in range(rounds):
        async with open_runner(config) as runner:
            await runner.add_or_update_flow(flow)
            started = time.perf_counter()
            await runner.start_flow(flow.id)
            values.append(time.perf_counter() - started)
    return values


async def _hop_latency(samples: int, rate: float, direct: bool) -> dict[str, float]:
    """p50/p99/max in us of one hop python -> go (``py_go``), go -> python (``go_py``)
    and two hops python -> go -> python (``two_hops``), one message at a time."""
    flows = {
        "py_go": _flow(
            "lat_py_go", [("a", "python", PY_STAMP), ("b", "go", GO_STAMP)], ["a.out -> b.in"]
        ),
        "go_py": _flow(
            "lat_go_py", [("a", "go", GO_STAMP), ("b", "python", PY_STAMP)], ["a.out -> b.in"]
        ),
        "two_hops": _flow(
            "lat_two",
            [("a", "python", PY_STAMP), ("b", "go", GO_ID), ("c", "python", PY_STAMP)],
            ["a.out -> b.in", "b.out -> c.in"],
        ),
    }
    out: dict[str, float] = {}
    async with open_runner(RunnerConfig(direct=direct)) as runner:
        for name, flow in flows.items():
            await runner.add_or_update_flow(flow)
            await runner.start_flow(flow.id)
            got: list[Any] = []

            async def sink(module: str, port: str, msgs: list[Any], got: list[Any] = got) -> None:
                got.extend(msgs)

            runner.set_output_sink(flow.id, sink)
            warm = 50  # the first ones (channels open after the first frames) not counted
            for i in range(samples + warm):
                await runner.inject(flow.id, "a", "in", [i])
                await runner.wait_idle(flow.id)
                await trio.sleep(1 / rate)  # a light fixed rate, not synchronization
            lat = sorted(m["t1"] - m["t0"] for m in got[warm:])
            out[f"{name}_p50_us"] = lat[len(lat) // 2]
            out[f"{name}_p99_us"] = lat[int(len(lat) * 0.99) - 1]
            out[f"{name}_max_us"] = lat[-1]
            out[f"{name}_direct"] = sum(w["direct"] for w in runner.flow_stats(flow.id)["wires"])
            await runner.stop_flow(flow.id)
    return out


def hop_latency(samples: int = 300, runs: int = 2) -> dict[str, dict[str, float]]:
    """Direct channels and ``--no-direct``, interleaved (``runs`` each, alternating): the
    median of the runs per figure."""
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(runs):
        for direct in (True, False):
            results[direct].append(trio.run(_hop_latency, samples, 500.0, direct))
    return {
        name: {
            "unit": "us",
            **{k: statistics.median(r[k] for r in results[direct]) for k in results[direct][0]},
        }
        for direct, name in ((True, "go_hop_latency"), (False, "go_hop_latency_no_direct"))
    }


def run(throughput: Throughput, n: int, rounds: int) -> dict[str, Any] | None:
    if find_go() is None:
        return None
    figures: dict[str, Any] = {}
    same = _flow(
        "same_go",
        [("a", "go", GO_ID), ("b", "go", GO_ID + "// b\n"), ("c", "go", GO_ID + "// c\n")],
        ["a.out -> b.in", "b.out -> c.in"],
    )
    values = trio.run(throughput, same, "a", n, rounds)
    figures["go_same_chain"] = {"unit": "msg/s", **_summary(values)}
    figures["go_same_chain_deliveries"] = {
        "unit": "deliveries/s",
        **_summary([v * 3 for v in values]),
    }
    same_py = _flow(
        "same_py",
        [("a", "python", PY_ID), ("b", "python", PY_ID), ("c", "python", PY_ID)],
        ["a.out -> b.in", "b.out -> c.in"],
    )
    py_values = trio.run(throughput, same_py, "a", n, rounds)
    figures["py_same_chain"] = {"unit": "msg/s", **_summary(py_values)}
    for name, mid, code in (("py_go_py", "go", GO_ID), ("py_node_py", "node", NODE_ID)):
        chain = _flow(
            name,
            [("a", "python", PY_ID), ("b", mid, code), ("c", "python", PY_ID)],
            ["a.out -> b.in", "b.out -> c.in"],
        )
        figures[name] = {"unit": "msg/s", **_summary(trio.run(throughput, chain, "a", n, rounds))}

    cold, changed = [], []
    for r in range(min(rounds, 3)):
        with tempfile.TemporaryDirectory(prefix="fifoflow-gobench-") as tmp:
            cache = Path(tmp)
            first = ensure_binary([GoSource(GO_ID + f"// round {r}\n", "a.go")], cache)
            cold.append(first.seconds)
            again = ensure_binary([GoSource(GO_ID + f"// round {r} changed\n", "a.go")], cache)
            changed.append(again.seconds)
    figures["go_build_cold"] = {"unit": "s", **_summary(cold)}
    figures["go_build_changed"] = {"unit": "s", **_summary(changed)}

    with tempfile.TemporaryDirectory(prefix="fifoflow-gobench-") as tmp:
        config = RunnerConfig(env_dir=Path(tmp) / "envs")
        go_flow = _flow("start_go", [("a", "go", GO_ID)], [])
        py_flow = _flow("start_py", [("a", "python", PY_ID)], [])
        trio.run(_start_time, config, go_flow, 1)  # builds it: not counted
        figures["go_start_cached"] = {
            "unit": "s",
            **_summary(trio.run(_start_time, config, go_flow, rounds)),
        }
        figures["py_start"] = {
            "unit": "s",
            **_summary(trio.run(_start_time, config, py_flow, rounds)),
        }
    figures.update(hop_latency(300 if rounds > 1 else 100))
    return figures


def _print_latency(figures: dict[str, Any]) -> None:
    on, off = figures["go_hop_latency"], figures["go_hop_latency_no_direct"]
    for name, label in (
        ("py_go", "one hop python -> go"),
        ("go_py", "one hop go -> python"),
        ("two_hops", "two hops python -> go -> python"),
    ):
        print(
            f"  {label:<32} p50 {on[name + '_p50_us']:,.0f} us  p99 {on[name + '_p99_us']:,.0f} us"
            f"  direct ({on[name + '_direct']:,.0f} msgs went direct);"
            f"  --no-direct p50 {off[name + '_p50_us']:,.0f} us  p99 {off[name + '_p99_us']:,.0f} us"
        )


def print_report(figures: dict[str, Any] | None) -> None:
    print()
    print("go runtime")
    if figures is None:
        print("  skipped: no Go toolchain")
        return
    for key, value in figures.items():
        if key in ("go_hop_latency", "go_hop_latency_no_direct"):
            continue
        unit = value["unit"]
        fmt = "{:,.3f}" if unit == "s" else "{:,.0f}"
        spread = f"{fmt.format(value['min'])} - {fmt.format(value['max'])}"
        print(f"  {key:<26} {fmt.format(value['median']):>12} {unit:<13} ({spread})")
    ratio = figures["py_go_py"]["median"] / figures["py_node_py"]["median"]
    print(f"  python -> go -> python / python -> node -> python: {ratio:.2f}x")
    same = figures["go_same_chain"]["median"] / figures["py_same_chain"]["median"]
    print(f"  three go modules in one host / three python modules in one host: {same:.2f}x")
    _print_latency(figures)
