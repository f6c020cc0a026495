"""Synthetic RxRx1: the release's plate design, rendered cells, siRNA phenotypes and batch effects."""

from phenoprint.data.synth.batch import NEUTRAL, BatchScale, SiteConditions, site_conditions
from phenoprint.data.synth.biology import TRAITS, Phenotype, phenotype
from phenoprint.data.synth.design import (
    PRESETS,
    CellTypePlan,
    SynthConfig,
    build_design,
    design_from_csv,
    preset_config,
    site_table,
    stream,
)
from phenoprint.data.synth.render import CELL_TYPE_MODELS, CellTypeModel, SiteKey, pixel_scale, render_site
from phenoprint.data.synth.writer import SYNTH_RECORD, SynthResult, render_wells, synthesize

__all__ = [
    "CELL_TYPE_MODELS",
    "NEUTRAL",
    "PRESETS",
    "SYNTH_RECORD",
    "TRAITS",
    "BatchScale",
    "CellTypeModel",
    "CellTypePlan",
    "Phenotype",
    "SiteConditions",
    "SiteKey",
    "SynthConfig",
    "SynthResult",
    "build_design",
    "design_from_csv",
    "phenotype",
    "pixel_scale",
    "preset_config",
    "render_site",
    "render_wells",
    "site_conditions",
    "site_table",
    "stream",
    "synthesize",
]
