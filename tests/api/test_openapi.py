"""The OpenAPI document is true: every route is in it, and a live server answers what
it says (schemathesis: no 5xx, documented status codes, bodies matching the schemas)."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from fifoflow.api.runner.app import ApiSettings, create_app
from fifoflow.api.runner.openapi import runner_openapi
from fifoflow.runner import Runner

from ..conftest import child_pids
from .helpers import CHAIN, ServerProcess, serve_runner

if TYPE_CHECKING:
    from collections.abc import Iterator

# Generated flows use python and node only: exec modules run whatever command they are
# given, and a fuzzer should not pick commands to run on this machine.
DOCUMENT = runner_openapi(["node", "python"], "test")
#: what schemathesis checks on every answer (the dispatcher's document too)
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    not_a_server_error,
]


def _without_installs(document: dict[str, Any]) -> dict[str, Any]:
    """The document with no requirements/packages fields: a generated one would make the
    runner install packages from the registries."""
    doc = copy.deepcopy(document)
    for name in ("ModuleDocument", "FlowDocument"):
        for field in ("requirements", "packages"):
            del doc["components"]["schemas"][name]["properties"][field]
    return doc


schema = schemathesis.openapi.from_dict(_without_installs(DOCUMENT))


def _routes() -> set[tuple[str, str]]:
    app = create_app(Runner(runtimes={}), ApiSettings(token="x"))
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method.lower(), path))
    return found


def test_every_route_is_documented_and_nothing_else() -> None:
    documented = {(method, path) for path, item in DOCUMENT["paths"].items() for method in item}
    assert _routes() == documented


def test_every_operation_has_an_id_and_documents_401() -> None:
    ids = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            ids.append(operation["operationId"])
            if operation.get("security") == []:  # public: the page's files (/ui/)
                assert path.startswith("/ui/"), (method, path)
                continue
            assert "401" in operation["responses"], (method, path)
    assert len(ids) == len(set(ids))
    # the seed's method names are operation ids
    assert {
        "listRuntimes",
        "listFlowsForRuntime",
        "addOrUpdateFlow",
        "removeFlow",
        "startFlow",
        "stopFlow",
        "setBreakPointAtModule",
        "removeBreakPointAtModule",
        "singleStepFlow",
    } <= set(ids)


def test_the_files_an_exec_module_carries_are_documented() -> None:
    files = DOCUMENT["components"]["schemas"]["ModuleDocument"]["properties"]["files"]
    assert files["type"] == "object"
    assert files["additionalProperties"] == {"type": "string"}
    assert "MAX_MODULE_FILES" in files["description"]


async def test_the_served_document_is_this_one() -> None:
    async with serve_runner() as served, served.client() as client:
        served_doc = await client.request("GET", "/openapi.json")
    assert served_doc["openapi"] == "3.1.0"
    assert served_doc["paths"].keys() == DOCUMENT["paths"].keys()
    runtimes = served_doc["components"]["schemas"]["ModuleDocument"]["properties"]["runtime"][
        "enum"
    ]
    assert set(runtimes) >= {"python", "node", "exec"}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A runner process with one flow on it, for schemathesis to poke at."""
    state_dir = tmp_path_factory.mktemp("schemathesis") / "state"
    server = ServerProcess(state_dir)
    url = server.start()
    token = (state_dir / "token").read_text().strip()
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    httpx.put(f"{url}/flows/chain", json=CHAIN, headers=headers, timeout=30).raise_for_status()
    httpx.post(f"{url}/flows/chain/start", headers=headers, timeout=30).raise_for_status()
    # One keep-alive connection for every case: an answer that left it stuck (a body not
    # read) would time the next case out.
    with requests.Session() as session:
        yield {"url": url, "headers": headers, "server": server, "session": session}
    assert server.stop() == 0, "\n".join(server.lines)
    assert not child_pids(), "the server left processes behind"


@schema.exclude(path="/ws").parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_the_api_does_what_its_document_says(case: Any, live_server: dict[str, Any]) -> None:
    response = case.call_and_validate(
        base_url=live_server["url"],
        session=live_server["session"],
        headers=live_server["headers"],
        checks=CHECKS,
        timeout=30,
    )
    assert response.status_code < 500
