"""Data: layouts (RxRx1 v1.0 and Kaggle, LoadData CSV) and metadata, exact site loading (PNG/TIFF, 8/16-bit), RGB
composites, plate geometry and the RxRx1 plate design, and packed stores.

The synthetic generator lives in :mod:`phenoprint.data.synth`.
"""

from phenoprint.data.images import decode_image, decode_png, load_site, read_png
from phenoprint.data.layout import (
    CELL_TYPES,
    CHANNEL_NAMES,
    CHANNELS,
    LAYOUTS,
    METADATA_COLUMNS,
    RXRX1_CHANNELS,
    SITES,
    WELL_TYPES,
    Layout,
    RxRx1Layout,
    cell_type_of,
    detect_layout,
    parse_image_name,
    read_metadata,
    site_status,
    wells_of,
)
from phenoprint.data.pack import PackSource
from phenoprint.data.plate import USED_WELLS, PlateGeometry, PlateGroups, infer_plate_groups, plate_geometry
from phenoprint.data.rgb import RGB_MAP, STAIN_COLOURS, to_rgb, write_previews

__all__ = [
    "CELL_TYPES",
    "CHANNELS",
    "CHANNEL_NAMES",
    "LAYOUTS",
    "METADATA_COLUMNS",
    "RGB_MAP",
    "RXRX1_CHANNELS",
    "SITES",
    "STAIN_COLOURS",
    "USED_WELLS",
    "WELL_TYPES",
    "Layout",
    "PackSource",
    "PlateGeometry",
    "PlateGroups",
    "RxRx1Layout",
    "cell_type_of",
    "decode_image",
    "decode_png",
    "detect_layout",
    "infer_plate_groups",
    "load_site",
    "parse_image_name",
    "plate_geometry",
    "read_metadata",
    "read_png",
    "site_status",
    "to_rgb",
    "wells_of",
    "write_previews",
]
