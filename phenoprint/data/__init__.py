"""RxRx1 data: layouts and metadata, exact site loading, RGB composites, the plate design, and packed stores.

The synthetic generator lives in :mod:`phenoprint.data.synth`.
"""

from phenoprint.data.images import decode_png, load_site, read_png
from phenoprint.data.layout import (
    CELL_TYPES,
    CHANNEL_NAMES,
    CHANNELS,
    METADATA_COLUMNS,
    SITES,
    WELL_TYPES,
    Layout,
    cell_type_of,
    detect_layout,
    parse_image_name,
    read_metadata,
    site_status,
    wells_of,
)
from phenoprint.data.pack import PackSource
from phenoprint.data.plate import USED_WELLS, PlateGroups, infer_plate_groups
from phenoprint.data.rgb import RGB_MAP, to_rgb, write_previews

__all__ = [
    "CELL_TYPES",
    "CHANNELS",
    "CHANNEL_NAMES",
    "METADATA_COLUMNS",
    "RGB_MAP",
    "SITES",
    "USED_WELLS",
    "WELL_TYPES",
    "Layout",
    "PackSource",
    "PlateGroups",
    "cell_type_of",
    "decode_png",
    "detect_layout",
    "infer_plate_groups",
    "load_site",
    "parse_image_name",
    "read_metadata",
    "read_png",
    "site_status",
    "to_rgb",
    "wells_of",
    "write_previews",
]
