"""An exec module that carries ``files`` runs in its private working directory: the
files are there, a hot swap with new files runs the new ones (and removes the old
directory), removing the flow removes its directories."""

from __future__ import annotations

from pathlib import Path

from fifoflow.runner import RunnerConfig, open_runner

from .helpers import Collector, make_flow, start

SCRIPT = """#!/bin/sh
while IFS= read -r line; do
  printf '{"v":"%s","in":%s,"data":"%s"}\\n' "{v}" "$line" "$(cat lib/data.txt)"
done
"""


def doc(version: str) -> dict[str, object]:
    return {
        "id": "carry",
        "modules": [
            {
                "id": "x",
                "runtime": "exec",
                "command": ["./step.sh"],
                "files": {
                    "step.sh": SCRIPT.replace("{v}", version),
                    "lib/data.txt": f"data {version}",
                },
            }
        ],
    }


async def test_files_are_written_swapped_and_removed(tmp_path: Path) -> None:
    async with open_runner(RunnerConfig(state_dir=tmp_path / "state")) as runner:
        sink = await start(runner, doc("one"))
        await runner.inject("carry", "x", "in", [1])
        await sink.wait_for(1)
        assert sink.msgs() == [{"v": "one", "in": 1, "data": "data one"}]
        [old] = (tmp_path / "state" / "work" / "carry").iterdir()

        result = await runner.apply_flow(make_flow(doc("two")))
        assert result.report is not None
        assert result.report["changes"]["codeChanged"] == ["x"]
        await runner.inject("carry", "x", "in", [2])
        await sink.wait_for(2)
        assert sink.msgs()[1] == {"v": "two", "in": 2, "data": "data two"}
        [new] = (tmp_path / "state" / "work" / "carry").iterdir()
        assert new != old  # the old version's directory is gone after the swap

        await runner.remove_flow("carry")
        assert not (tmp_path / "state" / "work" / "carry").exists()


async def test_a_restarted_runner_writes_the_files_again(tmp_path: Path) -> None:
    config = RunnerConfig(state_dir=tmp_path / "state")
    async with open_runner(config) as runner:
        await start(runner, doc("one"))
    work = tmp_path / "state" / "work"
    for path in sorted(work.rglob("*"), reverse=True):  # as if lost (a new container)
        path.rmdir() if path.is_dir() else path.unlink()
    async with open_runner(config) as runner:
        sink = Collector()
        runner.set_output_sink("carry", sink)
        await runner.inject("carry", "x", "in", [3])
        await sink.wait_for(1)
        assert sink.msgs() == [{"v": "one", "in": 3, "data": "data one"}]
