"""Schema-driven fuzzing of a running runtime server with schemathesis: requests generated from
its own ``/openapi.json`` (valid bodies, and bodies that break the schema; odd path
parameters) never get a 5xx, and every status is one the description documents. Bounded: a
few dozen examples per operation and mode, derandomized so that a failure repeats.

(schemathesis' lazy ``from_fixture`` parametrization does not work with pytest 9, so each
operation's strategy is driven by hypothesis here, one subtest per operation and mode.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, status_code_conformance

from mmop.runtime import contract
from tests.support.runtime import RuntimeServer

EXAMPLES = 20


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_runtime_api_never_answers_5xx_or_undocumented_codes(
    hostile_server: RuntimeServer, mode: GenerationMode, subtests: pytest.Subtests
) -> None:
    schema = schemathesis.openapi.from_url(hostile_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    labels = {operation.label for operation in operations}
    assert {"POST /v2/models/{name}/infer", "GET /v2/health/ready"} <= labels, labels
    if mode is GenerationMode.NEGATIVE:
        # Only request bodies can break the schema: path parameters are free strings.
        operations = [o for o in operations if o.method.upper() == "POST"]
    calls: list[int] = []

    for operation in operations:
        # The served model (and version), or every request would stop at a 404.
        pinned = {
            key: value
            for key, value in (("name", hostile_server.name), ("version", "v1"))
            if "{" + key + "}" in operation.path
        }

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(
                checks=[not_a_server_error, status_code_conformance], timeout=60
            )
            calls.append(response.status_code)

        with subtests.test(operation=operation.label):
            call()

    assert len(calls) >= len(operations)  # every operation was really called
    with hostile_server.client() as client:
        assert client.get(contract.READY_PATH).json() == {"ready": True}
    assert hostile_server.alive()
