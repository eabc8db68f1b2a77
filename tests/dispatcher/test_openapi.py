"""The dispatcher's OpenAPI document is true: every route is in it (and nothing else),
and a live dispatcher answers what it says (schemathesis)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis

from fifoflow.api.dispatcher.app import create_dispatcher_app
from fifoflow.api.dispatcher.openapi import dispatcher_openapi
from fifoflow.dispatcher.service import Dispatcher, DispatcherConfig

from ..api.test_openapi import CHECKS
from ..conftest import child_pids
from .test_dispatcher import COUNTER, DispatcherProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DOCUMENT = dispatcher_openapi("test", ["node", "python"])
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    dispatcher = Dispatcher(DispatcherConfig(state_dir=tmp_path))
    try:
        app = create_dispatcher_app(dispatcher, "x")
    finally:
        dispatcher.store.close()
    routes = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            # <any(a, b):name> routes are one path per choice
            choices = re.search(r"<any\(([^)]*)\):\w+>", rule.rule)
            for choice in choices.group(1).split(", ") if choices else [None]:
                path = rule.rule if choice is None else rule.rule.replace(choices.group(0), choice)
                routes.add((method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)))
    documented = {(m, p) for p, item in DOCUMENT["paths"].items() for m in item}
    assert routes == documented
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    # the seed's Runner API names, for deployed flows
    assert {
        "listRuntimes", "listFlowsForRuntime", "addOrUpdateFlow", "removeFlow", "startFlow",
        "stopFlow", "setBreakPointAtModule", "removeBreakPointAtModule", "singleStepFlow",
    } <= set(ids)  # fmt: skip


@pytest.fixture(scope="module")
def live_dispatcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A dispatcher process with one (pending) flow, for schemathesis to poke at."""
    proc = DispatcherProcess(tmp_path_factory.mktemp("schemathesis") / "dispatcher")
    proc.start()
    token = (proc.state_dir / "token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{proc.url}/flows", json=COUNTER, headers=headers, timeout=30).raise_for_status()
    served = httpx.get(f"{proc.url}/openapi.json", headers=headers, timeout=30).json()
    with requests.Session() as session:  # one keep-alive connection for every case
        yield {"url": proc.url, "headers": headers, "served": served, "session": session}
    assert proc.stop() == 0, "\n".join(proc.lines)
    assert not child_pids(), "the dispatcher left processes behind"


def test_the_served_document_is_this_one(live_dispatcher: dict[str, Any]) -> None:
    served = live_dispatcher["served"]
    assert served["openapi"] == "3.1.0"
    assert served["paths"].keys() == DOCUMENT["paths"].keys()


@schema.exclude(path_regex="^/(link|client/ws|client/host)$").parametrize()
@hypothesis.settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_the_dispatcher_does_what_its_document_says(
    case: Any, live_dispatcher: dict[str, Any]
) -> None:
    response = case.call_and_validate(
        base_url=live_dispatcher["url"],
        session=live_dispatcher["session"],
        headers=live_dispatcher["headers"],
        checks=CHECKS,
        timeout=30,
    )
    assert response.status_code < 500
