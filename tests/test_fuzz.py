"""The API against its own OpenAPI document: schemathesis generates requests for every operation (valid ones
and invalid ones), and no answer may be a 5xx, an undocumented status or a body that breaks its schema.

Seeded and bounded (derandomized Hypothesis, a few examples per operation) so that a run is reproducible and
takes seconds; the tiny bundled models (chat, fmnist-dcgan) answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python import asgi

from genloom.serve.app import create_app

ROOT = Path(__file__).resolve().parents[1]
MODELS = [str(ROOT / "models" / "chat"), str(ROOT / "models" / "fmnist-dcgan")]
EXAMPLES = 25  # per operation and mode; schemathesis' coverage phase adds each field's boundary values
HOST = "127.0.0.1"  # a loopback name, as a server that checks Host accepts by default
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SERVED = {"/v1/completions": "chat", "/v1/chat/completions": "chat", "/v1/images/generations": "fmnist-dcgan"}


def aim(case) -> None:
    """Name a served model in generation requests: a random model name only ever reaches the 404, and the
    point is to reach the engines and the image pipeline with everything else the schema allows."""
    if case.operation.path in SERVED and isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = SERVED[case.operation.path]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    app = create_app(MODELS, max_batch=4, max_queue=8, max_tokens=16, max_n=2, max_prompts=2,
                     data_dir=str(tmp_path_factory.mktemp("fuzz")), jobs=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": HOST})  # starts the lifespan
    deadline = time.monotonic() + 120
    while app.state.loading:  # the models load in the background
        assert time.monotonic() < deadline, "the fuzzed app's models did not load"
        time.sleep(0.05)
    assert not app.state.load_errors, app.state.load_errors
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    yield schema
    asgi.shutdown_lifespans()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case):
    aim(case)
    case.call_and_validate(base_url=f"http://{HOST}", checks=CHECKS)




# ---- the document itself ----


@pytest.fixture(scope="module")
def doc():
    return create_app(MODELS, jobs=False).openapi()


def test_no_422_and_every_error_answer_documented_with_openais_body(doc):
    """FastAPI promises 422 for bad input; this server answers 400 with OpenAI's error body."""
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "422" not in op["responses"], (method, path)
    post = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    for code in ("400", "401", "404", "413", "429", "503"):
        assert post[code]["content"]["application/json"]["schema"] == error, code
    assert set(doc["paths"]["/v1/models"]["get"]["responses"]) >= {"200", "401", "429"}
    assert "text/event-stream" in post["200"]["content"]
    assert "image/png" in doc["paths"]["/v1/images/{image_id}.png"]["get"]["responses"]["200"]["content"]
    err = doc["components"]["schemas"]["ErrorInfo"]
    assert set(err["properties"]) == {"message", "type", "param", "code"}


def test_the_schema_only_admits_what_the_server_accepts(doc):
    """suffix, an empty response_format and an empty input were schema-valid yet always refused."""
    s = doc["components"]["schemas"]
    completion, chat, images = s["CompletionRequest"], s["ChatCompletionRequest"], s["ImageRequest"]
    assert completion["properties"]["suffix"]["type"] == "null"
    fmt = chat["properties"]["response_format"]["anyOf"][0]
    assert s[fmt["$ref"].split("/")[-1]]["required"] == ["type"]
    assert all(f.get("minLength") == 1 or f.get("minItems") == 1 for f in s["EmbeddingRequest"]["properties"]["input"]["anyOf"])
    for model in (completion, chat, images):
        seed = model["properties"]["seed"]["anyOf"][0]
        assert seed["minimum"] == -(2**63) and abs(seed["maximum"] - (2**63 - 1)) <= 1  # (a float in the JSON)
    assert chat["properties"]["temperature"]["maximum"] == 2 and chat["properties"]["top_p"]["exclusiveMinimum"] == 0
