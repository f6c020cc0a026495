"""The assembled app: nothing loaded at import, the API key, hot reload of indexes, and the OpenAPI contract."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from phenoprint.api.app import app_settings, create_app
from phenoprint.api.settings import Settings, get_settings
from phenoprint.errors import CheckpointError
from phenoprint.index.experiment import ExperimentIndex
from tests.api.conftest import PER_PLATE, TARGET, Artifacts, b02_parts


def test_importing_and_creating_the_app_loads_nothing(settings: Settings, tmp_path: Path) -> None:
    """create_app reads no file and loads no model: an app of a model folder that does not exist is created (the
    lifespan, not create_app, refuses it)."""
    missing = tmp_path / "no-such-run"
    code = (
        "import json, sys; from phenoprint.api.app import create_app; from phenoprint.api.settings import Settings; "
        f"app = create_app(Settings(model={str(missing)!r}, indexes={str(settings.indexes)!r})); "
        "print(json.dumps({'service': getattr(app.state, 'service', None), 'routes': len(app.routes) > 5}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"service": None, "routes": True}
    app = create_app(settings.model_copy(update={"model": missing}))
    with pytest.raises(CheckpointError), TestClient(app):
        pass  # the lifespan loads the model, and refuses a folder that is not a run


def test_settings_given_to_create_app_are_the_dependency_tests_can_override(settings: Settings) -> None:
    app = create_app(settings)
    assert app_settings(app) is settings
    other = settings.model_copy(update={"max_upload_bytes": 5})
    app.dependency_overrides[get_settings] = lambda: other
    assert app_settings(app) is other


def test_a_configured_api_key_guards_the_data_endpoints(settings: Settings, artifacts: Artifacts) -> None:
    app = create_app(settings.model_copy(update={"api_key": SecretStr("s3cret")}))
    with TestClient(app) as client:
        post = {"files": b02_parts(artifacts.source), "data": {"experiment": TARGET}}
        r = client.post("/classify", **post)
        assert r.status_code == 401
        assert "X-API-Key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "ApiKey"
        assert client.post("/classify", headers={"X-API-Key": "wrong"}, **post).status_code == 401
        assert client.get("/experiments", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get("/sirnas/2").status_code == 401
        assert client.post("/classify", headers={"X-API-Key": "s3cret"}, **post).status_code == 200
        assert client.get("/experiments", headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(open_path).status_code == 200, open_path
        schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert schemes["APIKeyHeader"]["in"] == "header"
        assert schemes["APIKeyHeader"]["name"] == "X-API-Key"


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(settings: Settings) -> None:
    """FastAPI parses a multipart body before it runs dependencies: a 21 MB POST without a key was read in full."""
    import asyncio

    app = create_app(settings.model_copy(update={"api_key": SecretStr("s3cret")}))
    chunks_read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"\0" * 1_000_000, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    for key in (None, b"wrong"):
        headers = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"21000000")]
        if key is not None:
            headers.append((b"x-api-key", key))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/classify", "raw_path": b"/classify", "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        sent.clear()
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 401
        assert (b"www-authenticate", b"ApiKey") in sent[0]["headers"]
        assert chunks_read == 0


def _wait_for(condition, seconds: float = 20.0) -> None:
    """Poll a condition the background reloader will make true (it runs every 50 ms in these tests)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the reloader did not pick up the change in time")
        time.sleep(0.05)


def test_indexes_written_while_serving_are_picked_up(settings: Settings, artifacts: Artifacts, tmp_path: Path) -> None:
    root = tmp_path / "indexes"
    shutil.copytree(artifacts.indexes, root)
    shutil.rmtree(root / PER_PLATE)
    app = create_app(settings.model_copy(update={"indexes": root, "reload_interval_s": 0.05}))
    with TestClient(app) as client:

        def classify() -> dict:
            r = client.post("/classify", files=b02_parts(artifacts.source), data={"experiment": TARGET})
            assert r.status_code == 200, r.text
            return r.json()

        def created() -> str:
            return client.get(f"/experiments/{TARGET}").json()["created"]

        first = classify()["index_created"]
        half_written = root / f".{PER_PLATE}.tmp-1a2b3c"  # what ExperimentIndex.save leaves mid-write
        shutil.copytree(artifacts.indexes / PER_PLATE, half_written)
        (half_written / "manifest.json").unlink()
        index = ExperimentIndex.load(root / TARGET)
        index.manifest = {**index.manifest, "created": "second version"}
        index.save(root / TARGET)  # the way scripts/build_index.py replaces an index
        _wait_for(lambda: created() == "second version")
        assert first != "second version"
        assert classify()["index_created"] == "second version"
        assert [e["experiment"] for e in client.get("/experiments").json()["experiments"]] == [TARGET]

        shutil.copytree(artifacts.indexes / PER_PLATE, root / PER_PLATE)  # a new experiment
        _wait_for(lambda: client.get(f"/experiments/{PER_PLATE}").status_code == 200)
        shutil.rmtree(root / TARGET)  # a removed one
        _wait_for(lambda: client.get(f"/experiments/{TARGET}").status_code == 404)
        assert client.get("/readyz").json()["experiments"] == [PER_PLATE]
        text = client.get("/metrics").text
        assert 'phenoprint_index_reloads_total{result="removed"} 1.0' in text


#: Examples drawn per operation and generation mode: the size of the attack that found issue 11's holes.
SCHEMATHESIS_EXAMPLES = 200


@pytest.mark.slow
def test_the_openapi_contract_holds_and_nothing_is_a_server_error(settings: Settings) -> None:
    """Schemathesis draws requests from every operation's schema: each answer must match the schema (status code,
    content type, body) and none may be a 5xx. 200 examples per operation and mode, derandomized (the same cases on
    every run); operations without inputs have a single case."""
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /classify",
        "POST /embed",
        "POST /preview",
        "GET /experiments",
        "GET /experiments/{experiment}",
        "GET /sirnas/{sirna_id}",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
    with_inputs = {"POST /classify", "POST /embed", "POST /preview", "GET /sirnas/{sirna_id}"}
    cases = 0
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if f"{operation.method.upper()} {operation.path}" in with_inputs:  # the others have nothing to break
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(mode))
            @hypothesis_settings(
                max_examples=SCHEMATHESIS_EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
            )
            def check(case) -> None:
                nonlocal cases
                cases += 1
                # Random bytes that satisfy the schema are still not PNGs: a 415/422 is the right answer to them, so
                # the check that schema-valid requests succeed cannot apply; every other check does (no 5xx).
                case.call_and_validate(excluded_checks=[positive_data_acceptance])

            check()
    assert cases >= SCHEMATHESIS_EXAMPLES * (len(with_inputs) * 2 + 1)
