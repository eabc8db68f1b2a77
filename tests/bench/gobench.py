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
    return figures


def print_report(figures: dict[str, Any] | None) -> None:
    print()
    print("go runtime")
    if figures is None:
        print("  skipped: no Go toolchain")
        return
    for key, value in figures.items():
        unit = value["unit"]
        fmt = "{:,.3f}" if unit == "s" else "{:,.0f}"
        spread = f"{fmt.format(value['min'])} - {fmt.format(value['max'])}"
        print(f"  {key:<26} {fmt.format(value['median']):>12} {unit:<13} ({spread})")
    ratio = figures["py_go_py"]["median"] / figures["py_node_py"]["median"]
    print(f"  python -> go -> python / python -> node -> python: {ratio:.2f}x")
    same = figures["go_same_chain"]["median"] / figures["py_same_chain"]["median"]
    print(f"  three go modules in one host / three python modules in one host: {same:.2f}x")
