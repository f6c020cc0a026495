"""Request bodies over the limit get 413, whether they declare their length or stream it in chunks."""

from __future__ import annotations

from fastapi.testclient import TestClient

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from tests.api.conftest import TARGET, Artifacts, b02_parts


def _multipart(parts, boundary: str = "phenoprint-test-boundary") -> bytes:
    chunks = []
    for field, (name, data, content_type) in parts:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="experiment"\r\n\r\n{TARGET}\r\n'.encode())
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def test_a_declared_length_over_the_limit_is_refused_before_reading(settings: Settings, artifacts: Artifacts) -> None:
    body = _multipart(b02_parts(artifacts.source))
    limit = len(body) - 1
    with TestClient(create_app(settings.model_copy(update={"max_upload_bytes": limit}))) as client:
        r = client.post(
            "/classify",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=phenoprint-test-boundary"},
        )
        assert r.status_code == 413
        assert f"a body of {len(body):,} bytes was sent, the limit is {limit:,} bytes" in r.json()["detail"]
        assert "PHENOPRINT_MAX_UPLOAD_BYTES" in r.json()["detail"]
        text = client.get("/metrics").text
        assert 'phenoprint_http_requests_total{method="POST",route="unmatched",status="413"} 1.0' in text


def test_a_chunked_body_is_counted_as_it_streams(settings: Settings, artifacts: Artifacts) -> None:
    body = _multipart(b02_parts(artifacts.source))
    limit = len(body) // 2

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    with TestClient(create_app(settings.model_copy(update={"max_upload_bytes": limit}))) as client:
        r = client.post(
            "/classify",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=phenoprint-test-boundary"},
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413
        assert f"the limit is {limit:,} bytes" in r.json()["detail"]
        # under the limit, the same streamed body is classified
        ok = create_app(settings.model_copy(update={"max_upload_bytes": len(body)}))
    with TestClient(ok) as client:
        r = client.post(
            "/classify",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=phenoprint-test-boundary"},
        )
        assert r.status_code == 200, r.text
