"""Write a synthetic data root in the RxRx1 v1.0 layout: in parallel, resumable, the same bytes for a seed."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from phenoprint import __version__
from phenoprint.atomic import atomic_path, write_json_atomic
from phenoprint.data.layout import CHANNELS, SITES, RxRx1Layout
from phenoprint.data.synth.batch import site_conditions
from phenoprint.data.synth.biology import phenotype
from phenoprint.data.synth.design import SynthConfig, build_design, layout_fingerprint, site_table
from phenoprint.data.synth.render import CELL_TYPE_MODELS, SiteKey, render_site
from phenoprint.errors import LayoutError
from phenoprint.parallel import run_tasks

log = logging.getLogger(__name__)

#: Written last: its presence means every file of the data root is complete.
SYNTH_RECORD = "synth.json"
#: Written first and removed at the end: a folder holding it is an interrupted run of the config it names.
PENDING_RECORD = ".synth-pending.json"
#: Version of the synth.json format (and of the rendering model, bumped when the bytes change).
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthResult:
    """What a :func:`synthesize` call did."""

    root: Path  # the data root written
    n_sites: int  # sites in its metadata
    n_rendered: int  # sites rendered by this call
    n_skipped: int  # sites found complete from an earlier, interrupted call
    seconds: float  # wall-clock time of the call


def synth_record(config: SynthConfig, n_sites: int) -> dict[str, Any]:
    """The content of ``synth.json``: what was generated, from what, by which version."""
    return {
        "format_version": FORMAT_VERSION,
        "phenoprint_version": __version__,
        "preset": config.preset,
        "seed": config.seed,
        "batch_effects": config.batch_effects,
        "config": config.to_json(),
        "layout_sha256": None if config.layout_from is None else layout_fingerprint(config.layout_from),
        "n_sites": n_sites,
    }


def synthesize(
    config: SynthConfig,
    out: str | Path,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> SynthResult:
    """Generate a synthetic RxRx1 data root (v1.0 layout) that :func:`phenoprint.data.read_metadata` reads.

    Images are written first (each PNG under a temporary name, then renamed), then ``metadata.csv``, then
    ``synth.json``: a folder without ``synth.json`` is an interrupted run, and a rerun with the same config
    skips the sites already written. Every site is rendered from random streams keyed by the seed and the
    site, so the bytes do not depend on ``workers``.

    With ``workers > 1`` the renderers are spawned processes (not forked: the caller may hold threads, e.g.
    torch's), so a script that calls this must keep its top-level code under ``if __name__ == "__main__":``.

    Args:
        config: the resolved design (:func:`phenoprint.data.synth.preset_config`).
        out: the data root to write (created; must be empty or hold a run of the same config).
        workers: processes rendering in parallel (default: CPU count; 1 renders in this process).
        progress: show a progress bar.

    Raises:
        LayoutError: ``out`` holds other files, or a run of a different config, seed or version.
        ValueError: ``workers`` is below 1.
    """
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    root = Path(out)
    wells = build_design(config)
    sites = site_table(wells, config.sites_per_well)
    record = synth_record(config, len(sites))
    _claim_output(root, record)

    plates = [group for _, group in wells.groupby(["experiment", "plate"], sort=True)]
    tasks = [well_records(p) for p in plates]
    rendered = skipped = 0
    bar = tqdm(total=len(sites), desc="synth", unit="site", disable=not progress)
    try:
        for done, skip in _run(config, root, tasks, workers):
            rendered += done
            skipped += skip
            bar.update(done + skip)
    finally:
        bar.close()

    with atomic_path(root / "metadata.csv") as tmp:
        sites.to_csv(tmp, index=False)
    os.sync()  # the PNGs were renamed without an fsync each; make them durable before declaring completion
    write_json_atomic(record, root / SYNTH_RECORD)
    (root / PENDING_RECORD).unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log.info(
        "synth %s: %d sites (%d rendered, %d already there) in %.1f s with %d workers -> %s",
        config.preset,
        len(sites),
        rendered,
        skipped,
        seconds,
        workers,
        root,
    )
    return SynthResult(root, len(sites), rendered, skipped, seconds)


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "n_sites"}


def _claim_output(root: Path, record: dict[str, Any]) -> None:
    """Refuse a folder that holds anything but a run of this very config; mark it as ours otherwise."""
    if root.exists() and not root.is_dir():
        raise LayoutError(f"{root}: exists and is not a folder; give a new or empty folder to synth into")
    if root.is_dir() and any(root.iterdir()):
        found = next((root / name for name in (SYNTH_RECORD, PENDING_RECORD) if (root / name).is_file()), None)
        if found is None:
            raise LayoutError(
                f"{root}: not empty and not a phenoprint synth output; give a new or empty folder to synth into"
            )
        try:
            theirs = json.loads(found.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LayoutError(f"{found}: unreadable ({exc}); remove {root} or synth into another folder") from exc
        if _identity(theirs) != _identity(record):
            diff = sorted(k for k in _identity(record) if theirs.get(k) != record.get(k))
            raise LayoutError(
                f"{root} holds a synth run of another configuration (differs in: {', '.join(diff)}); "
                "rerun with the same options to resume it, or synth into another folder"
            )
        _remove_stale_temporaries(root)
        if found.name == SYNTH_RECORD:
            log.info("%s already holds this synth run; checking that every file is there", root)
            return
        log.info("%s holds an interrupted run of this configuration; resuming it", root)
    write_json_atomic(record, root / PENDING_RECORD)


def _remove_stale_temporaries(root: Path) -> None:
    stale = list((root / "images").glob("*/Plate*/.*.tmp")) if (root / "images").is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary files left by an interrupted run", len(stale))


def well_records(wells: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a well table (:func:`phenoprint.data.synth.build_design`) as plain dicts for :func:`render_wells`."""
    cols = ["experiment", "cell_type", "plate", "well", "well_type", "sirna_id"]
    return [
        {
            "experiment": str(r.experiment),
            "cell_type": str(r.cell_type),
            "plate": int(r.plate),
            "well": str(r.well),
            "well_type": str(r.well_type),
            "sirna_id": int(r.sirna_id),
        }
        for r in wells[cols].itertuples(index=False)
    ]


def _run(config: SynthConfig, root: Path, tasks: list[list[dict[str, Any]]], workers: int) -> Iterable[tuple[int, int]]:
    """Render the tasks (one plate each) in this process or a spawned pool; yield (rendered, skipped) per task."""
    return run_tasks(render_wells, [(config, root, wells) for wells in tasks], workers)


def render_wells(config: SynthConfig, root: Path, wells: list[dict[str, Any]]) -> tuple[int, int]:
    """Render and write the sites of some wells, skipping sites whose six PNGs exist.

    Returns:
        (sites rendered, sites skipped).
    """
    layout = RxRx1Layout(Path(root), "v1")
    rendered = skipped = 0
    for w in wells:
        biology = phenotype(config.seed, w["sirna_id"], w["well_type"], w["cell_type"])
        model = CELL_TYPE_MODELS[w["cell_type"]]
        for site in SITES[: config.sites_per_well]:
            paths = [layout.site_path(w["experiment"], w["plate"], w["well"], site, c) for c in CHANNELS]
            if all(p.is_file() for p in paths):
                skipped += 1
                continue
            key = SiteKey(config.seed, w["experiment"], w["plate"], w["well"], site)
            conditions = site_conditions(
                config.seed, w["experiment"], w["plate"], w["well"], site, batch_effects=config.batch_effects
            )
            image = render_site(key, config.image_size, model, biology, conditions)
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            for plane, path in zip(image, paths, strict=True):
                write_png(plane, path)
            rendered += 1
    return rendered, skipped


def write_png(plane: np.ndarray, path: Path) -> None:
    """Write one 8-bit grayscale PNG through :func:`write_image_file`."""
    write_image_file(path, lambda tmp: Image.fromarray(plane).save(tmp, format="PNG"))


def write_image_file(path: Path, write: Callable[[Path], object]) -> None:
    """Let ``write`` fill a temporary name in ``path``'s folder, then rename it into place.

    No fsync per file (a data root has hundreds of thousands of images, where :func:`phenoprint.atomic.atomic_path`
    syncs each); the generators sync once before they write their manifest. A process killed mid-write leaves only a
    hidden ``.*.tmp`` file, never a partial image.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
