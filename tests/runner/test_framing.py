"""Sans-IO framing (runner/framing.py): lines cut from whatever a read returned, and the
nesting check that decides whether an exit's messages need walking (flows/values.py)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from fifoflow.flows.values import shallow
from fifoflow.runner.errors import ProtocolError
from fifoflow.runner.framing import LineSplitter


def _pieces(data: bytes, rnd: random.Random) -> list[bytes]:
    cuts = sorted(rnd.sample(range(len(data) + 1), min(len(data) + 1, rnd.randint(0, 6))))
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_line_splitter_gives_the_same_lines_however_the_bytes_are_cut() -> None:
    rnd = random.Random(7)
    for _ in range(500):
        lines = [rnd.choice([b"", b"a", b'{"op":"done","seq":1}', b"x" * 300]) for _ in range(8)]
        data = b"".join(line + b"\n" for line in lines) + b"tail"
        splitter = LineSplitter()
        got = [line for piece in _pieces(data, rnd) for line in splitter.feed(piece)]
        assert got == lines
        assert splitter.pending == len(b"tail")


def test_line_splitter_refuses_a_line_longer_than_its_limit() -> None:
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"12345") == []
    with pytest.raises(ProtocolError, match="longer than 10 bytes"):
        splitter.feed(b"678901")
    # a line within the limit, cut in two, is one line
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"1234") == []
    assert splitter.feed(b"56\n7") == [b"123456"]


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@pytest.mark.parametrize("alphabet", ["ab[]{}", 'ab[]{}"\\'])
def test_shallow_agrees_with_the_real_nesting(alphabet: str) -> None:
    # strings with brackets (and, in the second run, quotes and backslashes) in batches
    # long enough to pass the bracket count: shallow() never says "shallow" of a value
    # nested deeper than the limit, and says it of every well-formed shallower one
    rnd = random.Random(11)

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 4)))

    def value(depth: int) -> Any:
        k = rnd.random()
        if depth <= 0 or k < 0.3:
            return rnd.choice([1, None, text()])
        if k < 0.65:
            return [value(depth - 1) for _ in range(rnd.randint(0, 3))]
        return {text(): value(depth - 1) for _ in range(rnd.randint(0, 3))}

    for _ in range(3000):
        limit = rnd.randint(1, 6)
        msgs = [value(rnd.randint(0, 8)) for _ in range(rnd.randint(1, 20))]
        assert shallow(orjson.dumps(msgs), limit) == (_depth(msgs) <= limit), msgs
