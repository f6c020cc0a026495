"""Synthetic plates in the CellProfiler LoadData layout: the generator's biology as 16-bit TIFFs listed by a CSV.

Five channels (DNA, ER, RNA, AGP, Mito) of the same rendered cells as the RxRx1 generator, any plate size
(96/384/1536) and sites per well, DMSO-like negative controls and a few positive controls on every plate, one plate
map shared by all plates (as screens repeat their layout), so that a model trained on some batches names the
treatments of another. ``load_data.csv`` and ``layout.toml`` are written last; the folder is then a data root.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from phenoprint.atomic import atomic_path, write_bytes_atomic, write_json_atomic
from phenoprint.configs import config_to_json
from phenoprint.data.plate import PLATE_FORMATS, PLATE_ROWS_384, PlateGeometry, parse_well
from phenoprint.data.synth.batch import site_conditions
from phenoprint.data.synth.biology import phenotype
from phenoprint.data.synth.design import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, stream
from phenoprint.data.synth.render import CELL_TYPE_MODELS, SiteKey, render_site
from phenoprint.data.synth.writer import write_image_file
from phenoprint.errors import LayoutError
from phenoprint.parallel import run_tasks

log = logging.getLogger(__name__)

#: The five Cell Painting stains written, and which rendered RxRx1 channels (w1-w6) make each: AGP (actin, Golgi,
#: plasma membrane) is the mean of the actin and Golgi renderings, RNA the nucleoli one.
STAINS: dict[str, tuple[int, ...]] = {"DNA": (1,), "ER": (2,), "RNA": (4,), "AGP": (3, 6), "Mito": (5,)}
#: The rendered 8-bit levels are spread over a 12-bit camera range (0-4095) with a uniform dither below one level,
#: so the TIFFs hold 16-bit samples whose low bits vary as a real camera's do.
LEVEL_SCALE = 16
CSV_NAME = "load_data.csv"
SPEC_NAME = "layout.toml"
RECORD_NAME = "synth_loaddata.json"
CELL_TYPE = "U2OS"  # the Cell Painting workhorse (JUMP's cell line)


@dataclass(frozen=True)
class LoadDataSynthConfig:
    """What decides the bytes of a synthetic LoadData root; saved resolved next to it."""

    plate_size: int = 96  # wells per plate: 96, 384 or 1536
    sites_per_well: int = 4  # fields of view per well
    n_batches: int = 2  # batches (experiments); batch effects differ between them
    plates_per_batch: int = 1  # plates per batch, all of one plate map
    n_negative: int = 8  # DMSO wells per plate
    n_positive: int = 3  # positive-control compounds, two wells each per plate
    n_treatments: int | None = None  # treatment wells per plate (None: every other well; fewer leave wells empty)
    image_size: int = 64  # pixels per side
    seed: int = 0  # root of every random stream
    batch_effects: bool = True  # False: the oracle twin without batch, plate, edge or site effects
    multipage: bool = False  # one multi-page TIFF per site (a page per channel) instead of a file per channel

    def __post_init__(self) -> None:
        if self.plate_size not in PLATE_FORMATS:
            raise ValueError(f"plate size must be one of {', '.join(map(str, PLATE_FORMATS))}, got {self.plate_size}")
        for name in ("sites_per_well", "n_batches", "plates_per_batch", "n_negative"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_negative + 2 * self.n_positive >= self.plate_size:
            raise ValueError(
                f"{self.n_negative} negative and 2 x {self.n_positive} positive control wells leave no treatment "
                f"well on a {self.plate_size}-well plate"
            )
        free = self.plate_size - self.n_negative - 2 * self.n_positive
        if self.n_treatments is not None and not 1 <= self.n_treatments <= free:
            raise ValueError(
                f"n_treatments must be 1-{free} on a {self.plate_size}-well plate, got {self.n_treatments}"
            )
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image size must be {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} px, got {self.image_size}")


@dataclass(frozen=True)
class LoadDataSynthResult:
    """What :func:`synthesize_loaddata` wrote."""

    root: Path  # the data root
    n_sites: int  # sites listed in load_data.csv
    n_plates: int  # plates written
    seconds: float  # wall-clock time


def plate_map(config: LoadDataSynthConfig) -> pd.DataFrame:
    """The plate map every plate shares: well, label, control type (negcon/poscon/trt) and class id.

    Negative controls (DMSO) and positive controls take wells spread over the plate (drawn once from the seed);
    every other well (or the first ``n_treatments`` of them) holds its own treatment. Ids: treatments 0 … T-1,
    positive controls T … T+P-1, DMSO T+P.
    """
    geometry = PLATE_FORMATS[config.plate_size]
    wells = np.array(geometry.wells())
    order = stream(config.seed, "loaddata", "plate-map").permutation(len(wells))
    n_pos_wells = 2 * config.n_positive
    negative = wells[order[: config.n_negative]]
    positive = wells[order[config.n_negative : config.n_negative + n_pos_wells]]
    rest = order[config.n_negative + n_pos_wells :]
    treated = np.sort(wells[rest if config.n_treatments is None else rest[: config.n_treatments]])
    n_treat = len(treated)
    rows = [(w, f"trt_{i:04d}", "trt", i) for i, w in enumerate(treated)]
    rows += [
        (w, f"poscon_{i % config.n_positive + 1}", "poscon", n_treat + i % config.n_positive)
        for i, w in enumerate(positive)
    ]
    rows += [(w, "DMSO", "negcon", n_treat + config.n_positive) for w in negative]
    frame = pd.DataFrame(rows, columns=["well", "label", "control_type", "label_id"])
    return frame.sort_values("well", key=lambda s: s.map(lambda w: parse_well(w)), kind="stable").reset_index(drop=True)


def synthesize_loaddata(
    config: LoadDataSynthConfig, out: str | Path, *, workers: int | None = None, progress: bool = True
) -> LoadDataSynthResult:
    """Write a synthetic LoadData data root: ``images/<plate>/…tif``, then ``load_data.csv`` and ``layout.toml``.

    Raises:
        LayoutError: ``out`` exists and is not empty.
    """
    workers = (os.cpu_count() or 1) if workers is None else workers
    start = time.perf_counter()
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise LayoutError(f"{root}: exists and is not an empty folder; give a new or empty folder to synth into")
    root.mkdir(parents=True, exist_ok=True)
    wells = plate_map(config)
    plates = [
        (f"batch{b + 1}", f"B{b + 1}P{p + 1}") for b in range(config.n_batches) for p in range(config.plates_per_batch)
    ]
    geometry = PLATE_FORMATS[config.plate_size]
    records = wells.to_dict("records")
    tasks = [(config, root, batch, plate, records, geometry) for batch, plate in plates]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(plates) * len(wells) * config.sites_per_well, desc="synth", unit="site", disable=not progress)
    try:
        for plate_rows in run_tasks(render_plate, tasks, workers):
            rows.extend(plate_rows)
            bar.update(len(plate_rows))
    finally:
        bar.close()
    table = pd.DataFrame(rows).sort_values(["Metadata_Plate", "Metadata_Well", "Metadata_Site"], kind="stable")
    os.sync()  # the TIFFs were renamed without an fsync each; make them durable before the CSV declares them
    write_bytes_atomic(SPEC_TEXT.encode(), root / SPEC_NAME)
    write_json_atomic(config_to_json(config), root / RECORD_NAME)
    with atomic_path(root / CSV_NAME) as tmp:  # last: the folder becomes a data root
        table.to_csv(tmp, index=False)
    seconds = time.perf_counter() - start
    log.info("synth loaddata: %d sites of %d plates in %.1f s -> %s", len(table), len(plates), seconds, root)
    return LoadDataSynthResult(root, len(table), len(plates), seconds)


#: The spec written beside the CSV: the defaults spelled out, as an example to copy for real plates.
SPEC_TEXT = """\
# How phenoprint reads load_data.csv (every key is optional; these are the defaults spelled out).
[loaddata]
csv = ["load_data.csv"]
experiment = "Metadata_Batch"        # the batch: centering is fitted per batch on its controls
plate = "Metadata_Plate"
well = "Metadata_Well"
site = "Metadata_Site"
label = "Metadata_label"             # the treatment's name
label_id = "Metadata_label_id"       # its integer class id (stable across data sets)
control = "Metadata_control_type"    # negcon / poscon / trt
negative_controls = ["negcon"]
positive_controls = ["poscon"]
cell_type = "Metadata_cell_type"
"""


def render_plate(
    config: LoadDataSynthConfig,
    root: Path,
    batch: str,
    plate: str,
    wells: list[dict[str, Any]],
    geometry: PlateGeometry,
) -> list[dict[str, Any]]:
    """Render one plate's sites as 16-bit TIFFs; return their LoadData rows."""
    import tifffile

    folder = root / "images" / plate
    folder.mkdir(parents=True, exist_ok=True)
    model = CELL_TYPE_MODELS[CELL_TYPE]
    plate_number = int(plate.rsplit("P", 1)[1])
    rows = []
    for w in wells:
        well_type = {"negcon": "negative_control", "poscon": "positive_control"}.get(w["control_type"], "treatment")
        biology = phenotype(config.seed, int(w["label_id"]), well_type, CELL_TYPE)
        effects_well = _rxrx1_like_well(w["well"], geometry)
        for site in range(1, config.sites_per_well + 1):
            key = SiteKey(config.seed, batch, plate_number, w["well"], site)
            conditions = site_conditions(
                config.seed, batch, plate_number, effects_well, site, batch_effects=config.batch_effects
            )
            image = render_site(key, config.image_size, model, biology, conditions)
            dither = stream(config.seed, "dither", batch, plate, w["well"], site)
            stack = np.stack([_to_16bit(image, chans, dither) for chans in STAINS.values()])
            row: dict[str, Any] = {
                "Metadata_Batch": batch,
                "Metadata_Plate": plate,
                "Metadata_Well": w["well"],
                "Metadata_Site": site,
                "Metadata_cell_type": CELL_TYPE,
                "Metadata_label": w["label"],
                "Metadata_label_id": int(w["label_id"]),
                "Metadata_control_type": w["control_type"],
            }
            if config.multipage:
                name = f"{w['well']}_s{site}.tif"
                _write_tiff(tifffile, stack, folder / name)
            for k, stain in enumerate(STAINS):
                if not config.multipage:
                    name = f"{w['well']}_s{site}_{stain}.tif"
                    _write_tiff(tifffile, stack[k], folder / name)
                row[f"FileName_Orig{stain}"] = name
                row[f"PathName_Orig{stain}"] = f"images/{plate}"
            rows.append(row)
    return rows


def _to_16bit(image: np.ndarray, channels: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    levels = np.mean([image[c - 1].astype(np.float64) for c in channels], axis=0)
    return np.clip(levels * LEVEL_SCALE + rng.uniform(0, LEVEL_SCALE, levels.shape), 0, 65535).astype(np.uint16)


def _rxrx1_like_well(well: str, geometry: PlateGeometry) -> str:
    """The 384-well position (B-O, 02-23) at the same relative place, for the batch-effect model's edge effects."""
    row, col = parse_well(well)
    r = 1 + round(row * 13 / max(geometry.n_rows - 1, 1))
    c = 2 + round(col * 21 / max(geometry.n_columns - 1, 1))
    return f"{PLATE_ROWS_384[r]}{c:02d}"


def _write_tiff(tifffile: Any, array: np.ndarray, path: Path) -> None:
    write_image_file(path, lambda tmp: tifffile.imwrite(tmp, array, photometric="minisblack"))
