"""``POST /preview``: an RGB composite PNG of one site, in the RxRx1 colour map."""

from __future__ import annotations

import io
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import Response
from PIL import Image

from phenoprint.api.deps import SettingsDep
from phenoprint.api.errors import UPLOAD
from phenoprint.api.schemas import SiteFiles
from phenoprint.api.uploads import read_uploads
from phenoprint.data.rgb import Contrast, to_rgb

router = APIRouter(tags=["preview"])


@router.post(
    "/preview",
    summary="RGB composite of one site",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "an RGB PNG of the site's size"}, **UPLOAD},
)
async def preview_site(
    files: SiteFiles,
    settings: SettingsDep,
    contrast: Annotated[
        Contrast,
        Query(
            description="percentile: each channel stretched by the image's own intensities; rxrx1: the fixed "
            "display ranges Recursion published (they suit HUVEC; brighter cell types come out white)"
        ),
    ] = "percentile",
) -> Response:
    """The six channels painted in the colours Recursion published with RxRx1 and summed (rxrx1-utils)."""
    upload = await read_uploads(files, max_sites=1, max_pixels=settings.max_image_pixels)

    def render() -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(to_rgb(upload.sites[0], contrast=contrast)).save(buffer, format="PNG")
        return buffer.getvalue()

    png = await anyio.to_thread.run_sync(render)
    name = f"{upload.well + '_' if upload.well else ''}s{upload.site_numbers[0]}_rgb.png"
    return Response(png, media_type="image/png", headers={"Content-Disposition": f'inline; filename="{name}"'})
