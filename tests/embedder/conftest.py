"""An in-memory SiteSource with a learnable class signal, for fast embedder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phenoprint.data.layout import METADATA_COLUMNS, RXRX1_CHANNELS, SIRNA_NAME
from phenoprint.data.plate import USED_WELLS


class FakeSource:
    """Sites whose channel brightness encodes the siRNA, plus an experiment offset and noise.

    ``n_treatments`` treatment siRNAs (ids 0…n-1) and ``n_controls`` positive controls (ids n…) sit on one
    plate per experiment; every site is deterministic in (experiment, well, site).
    """

    def __init__(self, experiments=("HUVEC-01", "HUVEC-02", "RPE-01"), n_treatments=6, n_controls=2, size=32):
        rows = []
        for e, exp in enumerate(experiments):
            for k in range(n_treatments + n_controls):
                wt = "treatment" if k < n_treatments else "positive_control"
                for site in (1, 2):
                    rows.append((exp, exp.split("-")[0], 1, USED_WELLS[k + e], site, wt, k, "train"))
        meta = pd.DataFrame(rows, columns=list(METADATA_COLUMNS)).astype({"sirna_id": "Int64"})
        meta[SIRNA_NAME] = ("s" + meta.sirna_id.astype(str)).astype("string")  # named, as in RxRx1 v1.0 metadata
        self._metadata = meta
        self.size = size
        self._signal = np.random.default_rng(1).uniform(0.2, 1.0, size=(n_treatments + n_controls, 6))

    @property
    def metadata(self) -> pd.DataFrame:
        return self._metadata

    @property
    def channel_names(self) -> tuple[str, ...]:
        return RXRX1_CHANNELS

    def with_images(self, metadata: pd.DataFrame, skipped: str) -> pd.DataFrame:
        return metadata

    def load(self, experiment: str, plate: int, well: str, site: int) -> np.ndarray:
        row = self._metadata[(self._metadata.experiment == experiment) & (self._metadata.well == well)].iloc[0]
        seed = abs(hash((experiment, well, site))) % 2**32
        rng = np.random.default_rng(seed)
        sig = self._signal[int(row.sirna_id)]
        yy, xx = np.mgrid[0 : self.size, 0 : self.size] / self.size
        pattern = np.stack([np.sin((c + 1) * 3 * xx * sig[c] + yy) for c in range(6)])
        base = 80 + 60 * sig[:, None, None] * pattern + rng.normal(0, 8, size=(6, self.size, self.size))
        return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture
def fake_source() -> FakeSource:
    return FakeSource()


def write_root(source: FakeSource, root) -> None:
    """Write a FakeSource as a v1.0-layout data root (metadata.csv + PNGs)."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    meta = source.metadata.copy()
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / "metadata.csv", index=False)
    for r in meta.itertuples():
        folder = root / "images" / r.experiment / f"Plate{r.plate}"
        folder.mkdir(parents=True, exist_ok=True)
        site = source.load(r.experiment, r.plate, r.well, r.site)
        for c in range(6):
            Image.fromarray(site[c]).save(folder / f"{r.well}_s{r.site}_w{c + 1}.png")


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_root")
    write_root(FakeSource(), root)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of a tiny resnet10t on :class:`FakeSource` (2 epochs at 24 px): trained once for every test
    that needs a model to load, embed or export with. Tests that change it copy it first."""
    from phenoprint.embedder.config import ModelConfig, TrainConfig
    from phenoprint.embedder.train import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    config = TrainConfig(
        model=ModelConfig(backbone="resnet10t", embedding_dim=16, num_classes=8),
        image_size=24,
        epochs=2,
        batch_size=8,
        workers=0,
        device="cpu",
        checkpoint_every=100,
    )
    train(config, FakeSource(), out, progress=False)
    return out
