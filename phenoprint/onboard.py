"""Onboarding a new batch (embedder and index together): embed its controls, fit its centering, build its index."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from phenoprint.data.source import SiteSource
from phenoprint.data.table import EmbeddingTable, concat_tables, read_embeddings, write_embeddings
from phenoprint.embedder.data import experiment_channel_stats
from phenoprint.embedder.export import embed_table, select_wells
from phenoprint.embedder.inference import LoadedModel, adapt_to_wells, batchnorm_state
from phenoprint.embedder.record import EmbedderRecord
from phenoprint.errors import EmbeddingTableError, MetadataError
from phenoprint.index.build import build_experiment_index
from phenoprint.index.config import IndexConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnboardResult:
    """What onboarding one experiment produced."""

    experiment: str
    index_dir: Path
    embedded_wells: int  # wells of the new experiment embedded (its controls, or all of them)
    index_entries: int  # vectors in the new index
    seconds: float
    queries_path: Path | None  # the experiment's embeddings, when asked to write them
    tta: int = 1  # dihedral transforms the batch was embedded with
    bn_adapt: bool = False  # whether batch-norm statistics were re-estimated on the batch


@dataclass(frozen=True)
class EmbeddingSettings:
    """How the wells of a new batch are embedded: as the reference embeddings were, unless told otherwise."""

    tta: int  # dihedral transforms averaged per site
    bn_adapt: bool  # batch-norm statistics re-estimated on the batch
    from_reference: bool  # whether both were taken from the reference table's record (none was given)


def embedding_settings(
    reference_info: dict, tta: int | None = None, bn_adapt: bool | None = None, allow_mismatch: bool = False
) -> EmbeddingSettings:
    """The TTA and BN adaptation to embed a new batch with, from the reference table's record by default.

    A batch embedded differently from the wells it is compared with loses accuracy without any error (its vectors
    and the reference's no longer live in the same space), so an explicit value that contradicts the record is
    refused unless ``allow_mismatch``, which warns instead.

    Args:
        reference_info: the reference table's ``info`` (``phenoprint embed`` records ``tta`` and ``bn_adapt``).
        tta: asked for (None: the reference's, or 1 when it records none).
        bn_adapt: asked for (None: the reference's, or False when it records none).
        allow_mismatch: embed as asked even where the reference was embedded otherwise (with a warning).

    Raises:
        EmbeddingTableError: an explicit value differs from the reference's record and ``allow_mismatch`` is off.
    """
    ref_tta, ref_bn = reference_info.get("tta"), reference_info.get("bn_adapt")
    if not (isinstance(ref_tta, int) and not isinstance(ref_tta, bool) and 1 <= ref_tta <= 8):
        ref_tta = None
    if not isinstance(ref_bn, bool):
        ref_bn = None
    if (tta is None and ref_tta is None) or (bn_adapt is None and ref_bn is None):
        log.warning(
            "the reference embeddings do not record how they were embedded; embedding the batch with %s "
            "(pass --tta and --bn-adapt/--no-bn-adapt as the reference was made)",
            f"tta={tta or 1}, bn_adapt={bool(bn_adapt)}",
        )
    chosen_tta = tta if tta is not None else ref_tta or 1
    chosen_bn = bn_adapt if bn_adapt is not None else bool(ref_bn)
    differs = []
    if ref_tta is not None and chosen_tta != ref_tta:
        differs.append(f"--tta {chosen_tta} where the reference used {ref_tta} (pass --tta {ref_tta})")
    if ref_bn is not None and chosen_bn != ref_bn:
        flag = "--bn-adapt" if ref_bn else "--no-bn-adapt"
        differs.append(
            f"BN adaptation {'on' if chosen_bn else 'off'} where the reference had it "
            f"{'on' if ref_bn else 'off'} (pass {flag})"
        )
    if differs:
        message = (
            "the new batch would be embedded differently from the reference embeddings it is indexed against: "
            + "; ".join(differs)
            + ". Leave the options out to embed it as the reference was, or re-export the reference with the "
            "settings you want (phenoprint embed --tta N [--bn-adapt])"
        )
        if not allow_mismatch:
            raise EmbeddingTableError(message)
        log.warning("%s; going on as asked (--allow-mismatch): expect lower accuracy", message)
    taken = tta is None and bn_adapt is None and ref_tta is not None and ref_bn is not None
    return EmbeddingSettings(chosen_tta, chosen_bn, taken)


def onboard_experiment(
    model: LoadedModel,
    source: SiteSource,
    experiment: str,
    reference: EmbeddingTable | str | Path,
    out_dir: str | Path,
    config: IndexConfig,
    *,
    embed_all: bool = False,
    queries_out: str | Path | None = None,
    tta: int | None = None,
    bn_adapt: bool | None = None,
    allow_mismatch: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> OnboardResult:
    """Build the per-experiment index of a new batch from its images.

    Only the batch's control wells need labels: they are embedded, the batch's centering is fitted on them,
    and they join the labelled wells of the reference experiments (each centred with its own statistics)
    in a new index written atomically to ``out_dir``. Rows of ``experiment`` already present in the
    reference table are replaced by the fresh ones.

    Args:
        model: the embedder (its fingerprint must match the reference table's).
        source: the new batch's images (PNGs or a pack).
        experiment: the new batch's experiment name.
        reference: embeddings of the training experiments (a table or a Parquet path).
        out_dir: the index directory to create or replace.
        config: centering and index options (``reference="all"`` embeds every well of the batch).
        embed_all: embed every well of the batch, not only the controls (implied by ``reference="all"``
            and by ``queries_out``).
        queries_out: also write the batch's embeddings (every well) to this Parquet file.
        tta: dihedral transforms per site (None: as the reference table records, see :func:`embedding_settings`).
        bn_adapt: re-estimate batch-norm statistics on the batch (None: as the reference table records).
        allow_mismatch: embed as asked even where the reference was embedded otherwise (warns).

    Raises:
        UnknownExperimentError: the experiment is not in the source's metadata.
        MetadataError: the batch has no labelled control wells and the centering needs them.
        EmbeddingTableError: the reference table came from another model, or ``tta`` / ``bn_adapt`` contradict
            how it was embedded.
    """
    started = time.perf_counter()
    ref = _reference_of(reference, model.fingerprint)
    how = embedding_settings(ref.info, tta, bn_adapt, allow_mismatch)
    everything = embed_all or config.reference == "all" or queries_out is not None
    metadata, wells = _batch_wells(source, experiment, config, everything)
    new, record = _embed_batch(model, source, metadata, wells, experiment, how, batch_size, workers, progress)
    queries_path = None
    if queries_out is not None:
        queries_path = write_embeddings(new, queries_out)
    keep = ref.subset(ref.meta["Metadata_experiment"].to_numpy() != experiment)
    if ref.dim != new.dim:
        raise EmbeddingTableError(f"reference embeddings have {ref.dim} dimensions, the model gives {new.dim}")
    combined = concat_tables([keep, new], names=["the reference embeddings", "the new batch's embeddings"])
    index = build_experiment_index(
        combined,
        experiment,
        config,
        fingerprint=model.fingerprint,
        producer=record.producer(),
        producer_arrays=record.arrays(),
    )
    out = index.save(out_dir)
    seconds = time.perf_counter() - started
    log.debug("onboarded %s: %d wells embedded, %d index entries, %.1f s", experiment, len(new), len(index), seconds)
    return OnboardResult(experiment, Path(out), len(new), len(index), seconds, queries_path, how.tta, how.bn_adapt)


def _reference_of(reference: EmbeddingTable | str | Path, fingerprint: str) -> EmbeddingTable:
    """The reference table (read when a path), refused when another model made it."""
    ref = reference if isinstance(reference, EmbeddingTable) else read_embeddings(reference)
    if ref.fingerprint is not None and ref.fingerprint != fingerprint:
        raise EmbeddingTableError(
            f"the reference embeddings come from model {ref.fingerprint[:16]}…, not from {fingerprint[:16]}… "
            "(re-export them with `phenoprint embed --model` of this run)"
        )
    return ref


def _batch_wells(
    source: SiteSource, experiment: str, config: IndexConfig, everything: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batch's listed sites that have images, and the wells of ``experiment`` to embed among them."""
    metadata = source.with_images(source.metadata, "skipped")
    wells = select_wells(metadata, (experiment,), controls_only=not everything)
    controls = wells[(wells.well_type != "treatment") & wells.sirna_id.notna()]
    if config.reference == "controls" and controls.empty:
        raise MetadataError(
            f"{experiment} has no labelled control wells with images; label its controls in the metadata, "
            "or fit the centering on all its wells (--center-on all)"
        )
    return metadata, wells


def _embed_batch(
    model: LoadedModel,
    source: SiteSource,
    metadata: pd.DataFrame,
    wells: pd.DataFrame,
    experiment: str,
    how: EmbeddingSettings,
    batch_size: int,
    workers: int,
    progress: bool,
) -> tuple[EmbeddingTable, EmbedderRecord]:
    """The batch's wells embedded as ``how`` says, and the record of how (stored with the index)."""
    stats = experiment_stats(model, source, metadata, experiment)
    channel_stats = None if stats is None else {experiment: stats}
    embedder: nn.Module = model.embedder
    if how.bn_adapt:  # statistics need no labels: adapt on every well of the batch, whichever are embedded
        every_well = select_wells(metadata, (experiment,))
        embedder = adapt_to_wells(
            embedder, source, every_well, model.config, model.device, channel_stats, batch_size, workers
        )
    info = {"tta": how.tta, "bn_adapt": how.bn_adapt}
    new = embed_table(
        model,
        source,
        wells,
        info,
        embedder=embedder,
        channel_stats=channel_stats,
        tta=how.tta,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    record = EmbedderRecord(
        input_normalization=model.config.normalization,
        tta=how.tta,
        bn_adapt=how.bn_adapt,
        channel_stats=stats,
        bn_state=batchnorm_state(embedder) if how.bn_adapt else None,
    )
    return new, record


def experiment_stats(
    model: LoadedModel, source: SiteSource, metadata: pd.DataFrame, experiment: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """The experiment's per-channel (mean, std) when the model standardizes per experiment, else None.

    Statistics need no labels: they come from sites of all the experiment's wells (treatments included).
    """
    if model.config.normalization != "experiment":
        return None
    wells = select_wells(metadata, (experiment,))
    return experiment_channel_stats(source, wells, seed=model.config.seed)[experiment]


def onboard_summary(result: OnboardResult) -> str:
    """One line on what onboarding did, for whoever ran it (the CLI prints it, the demo says it)."""
    line = (
        f"onboarded {result.experiment}: {result.embedded_wells} wells embedded (TTA {result.tta}, BN adaptation "
        f"{'on' if result.bn_adapt else 'off'}), {result.index_entries} index entries, {result.seconds:.1f} s "
        f"-> {result.index_dir}"
    )
    if result.queries_path is not None:
        line += f"\nwrote its embeddings to {result.queries_path}"
    return line
