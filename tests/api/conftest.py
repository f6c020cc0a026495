"""Shared fixtures of the service tests: a tiny trained run and its index folder, built once per session."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from phenoprint.api.app import create_app
from phenoprint.api.settings import Settings
from tests.embedder.conftest import FakeSource

#: Experiments of FakeSource: HUVEC-01 (reference only), HUVEC-02 (onboarded, per experiment), RPE-01 (per plate).
TARGET = "HUVEC-02"
PER_PLATE = "RPE-01"


@dataclass(frozen=True)
class Artifacts:
    """What a tiny end-to-end run leaves on disk."""

    run: Path  # a finished training run (site normalization, cell-type context)
    reference: Path  # its embeddings of every FakeSource well
    indexes: Path  # one onboarded index directory per experiment: TARGET and PER_PLATE
    source: FakeSource


def train_tiny(out: Path, source: FakeSource, **overrides) -> Path:
    """A one-epoch resnet10t run on FakeSource (a few seconds on a CPU)."""
    from phenoprint.embedder.config import ModelConfig, TrainConfig
    from phenoprint.embedder.train import train

    model = ModelConfig(
        backbone="resnet10t",
        embedding_dim=16,
        num_classes=8,
        cell_type_context=overrides.pop("cell_type_context", False),
    )
    config = TrainConfig(
        model=model, image_size=24, epochs=1, batch_size=8, workers=0, device="cpu", checkpoint_every=1000, **overrides
    )
    train(config, source, out, progress=False)
    return out


def onboard(
    run: Path,
    source: FakeSource,
    experiment: str,
    reference: Path,
    out: Path,
    bn_adapt: bool | None = None,
    tta: int | None = None,
    queries_out: Path | None = None,
    allow_mismatch: bool = False,
    **index_config,
) -> Path:
    """``scripts/build_index.py`` in-process: embed the experiment's controls, centre, index against the reference."""
    from phenoprint.embedder.inference import load_model
    from phenoprint.index.config import IndexConfig
    from phenoprint.onboard import onboard_experiment

    model = load_model(run, "cpu")
    return onboard_experiment(
        model,
        source,
        experiment,
        reference,
        out,
        IndexConfig(**{"center": "tvn", "mode": "centroid", **index_config}),  # fixed unless a test asks
        bn_adapt=bn_adapt,
        tta=tta,
        allow_mismatch=allow_mismatch,
        queries_out=queries_out,
        progress=False,
    ).index_dir


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Artifacts:
    from phenoprint.embedder.export import export_embeddings
    from phenoprint.embedder.inference import load_model

    base = tmp_path_factory.mktemp("api")
    source = FakeSource()
    run = train_tiny(base / "run", source, cell_type_context=True)
    reference = base / "reference.parquet"
    export_embeddings(load_model(run, "cpu"), source, reference, progress=False)
    indexes = base / "indexes"
    onboard(run, source, TARGET, reference, indexes / TARGET, center="center")
    onboard(run, source, PER_PLATE, reference, indexes / PER_PLATE, center="center", per_plate=True, scope="all")
    return Artifacts(run, reference, indexes, source)


@pytest.fixture
def settings(artifacts: Artifacts) -> Settings:
    """Settings of a test app: the shared artifacts, no background reloads, the CPU."""
    return Settings(model=artifacts.run, indexes=artifacts.indexes, device="cpu", reload_interval_s=0)


@pytest.fixture(scope="session")
def client(artifacts: Artifacts) -> Iterator[TestClient]:
    """One running app shared by the tests that only read (each test that changes settings builds its own)."""
    app = create_app(Settings(model=artifacts.run, indexes=artifacts.indexes, device="cpu", reload_interval_s=0))
    with TestClient(app) as c:
        yield c


def png(plane: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(plane)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC, as the PNG standard lays it out."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """An 8-bit grayscale IHDR chunk declaring ``width`` x ``height``."""
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def png_with_chunks(data: bytes, before: bytes = b"", after_header: bytes = b"") -> bytes:
    """A PNG with extra chunks inserted before its IHDR and/or right after it."""
    signature, header, rest = data[:8], data[8:33], data[33:]
    return signature + before + header + after_header + rest


def site_pngs(source: FakeSource, experiment: str, well: str, site: int, name: str | None = None) -> dict[str, bytes]:
    """The six channel PNGs of one FakeSource site, named as in RxRx1 (after ``name`` instead of the well if given)."""
    array = source.load(experiment, 1, well, site)
    return {f"{name or well}_s{site}_w{c + 1}.png": png(array[c]) for c in range(6)}


def well_parts(
    source: FakeSource, experiment: str, well: str, sites=(1, 2), name: str | None = None
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart ``files`` parts of a well, as httpx takes them."""
    parts = []
    for site in sites:
        for file_name, data in site_pngs(source, experiment, well, site, name).items():
            parts.append(("files", (file_name, data, "image/png")))
    return parts


def b02_parts(source: FakeSource, experiment: str = TARGET, sites=(1, 2)):
    """Parts of the first well of an experiment, named B02_s<site>_w<channel>.png whatever its well."""
    return well_parts(source, experiment, well_of(source, experiment, 0), sites, name="B02")


def well_of(source: FakeSource, experiment: str, sirna_id: int) -> str:
    """The well of an siRNA in an experiment of FakeSource."""
    meta = source.metadata
    row = meta[(meta.experiment == experiment) & (meta.sirna_id == sirna_id)].iloc[0]
    return str(row.well)
