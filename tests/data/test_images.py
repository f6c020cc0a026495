"""load_site against PIL on the real PNGs, and every refusal it promises."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from phenoprint.data import decode_png, load_site
from phenoprint.errors import ImageFormatError

EXPERIMENTS = ("HUVEC-01", "RPE-01", "HEPG2-01", "U2OS-01")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_load_site_is_pixel_identical_to_pil(rxrx1_root: Path, experiment: str) -> None:
    for plate in (1, 4):
        for site in (1, 2):
            got = load_site(rxrx1_root, experiment, plate, "B02", site)
            folder = rxrx1_root / "train" / experiment / f"Plate{plate}"
            want = np.stack([np.array(Image.open(folder / f"B02_s{site}_w{c}.png")) for c in range(1, 7)])
            assert got.dtype == np.uint8
            assert got.shape == (6, 512, 512)
            np.testing.assert_array_equal(got, want)


def test_channel_selection_keeps_the_requested_order(rxrx1_root: Path) -> None:
    full = load_site(rxrx1_root, "U2OS-01", 2, "B02", 1)
    some = load_site(rxrx1_root, "U2OS-01", 2, "B02", 1, channels=(5, 1))
    np.testing.assert_array_equal(some, full[[4, 0]])


@pytest.mark.parametrize("channels", [(), (0,), (7,), (1, 1)])
def test_invalid_channel_selection_is_refused(rxrx1_root: Path, channels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="distinct numbers"):
        load_site(rxrx1_root, "U2OS-01", 2, "B02", 1, channels=channels)


def test_listed_well_without_images_names_the_missing_file(rxrx1_root: Path) -> None:
    with pytest.raises(ImageFormatError, match=r"C03_s1_w1\.png: file not found") as info:
        load_site(rxrx1_root, "HUVEC-01", 1, "C03", 1)
    assert info.value.source.endswith("C03_s1_w1.png")


@pytest.fixture
def copied_site(rxrx1_root: Path, tmp_path: Path) -> Path:
    """A Kaggle-layout root holding a copy of one real site, for tests that damage files."""
    (tmp_path / "train.csv").write_text("id_code,experiment,plate,well,sirna\n")
    folder = tmp_path / "train" / "RPE-01" / "Plate1"
    folder.mkdir(parents=True)
    for f in (rxrx1_root / "train" / "RPE-01" / "Plate1").glob("B02_s1_*.png"):
        shutil.copyfile(f, folder / f.name)
    return tmp_path


def _file(root: Path, channel: int) -> Path:
    return root / "train" / "RPE-01" / "Plate1" / f"B02_s1_w{channel}.png"


def test_non_png_file_is_refused(copied_site: Path) -> None:
    _file(copied_site, 3).write_bytes(b"\xff\xd8\xff\xe0 a JPEG header")
    with pytest.raises(ImageFormatError, match=r"w3\.png: not a PNG"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_empty_file_is_refused(copied_site: Path) -> None:
    _file(copied_site, 2).write_bytes(b"")
    with pytest.raises(ImageFormatError, match=r"w2\.png: not a PNG \(an empty file\)"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_truncated_png_is_refused(copied_site: Path) -> None:
    path = _file(copied_site, 4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageFormatError, match=r"w4\.png: truncated or corrupt PNG"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_channels_of_different_sizes_are_refused(copied_site: Path) -> None:
    Image.fromarray(np.zeros((256, 512), dtype=np.uint8)).save(_file(copied_site, 6))
    with pytest.raises(ImageFormatError, match=r"w6\.png: size 512x256 differs from 512x512"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_colour_png_is_refused(copied_site: Path) -> None:
    Image.fromarray(np.zeros((512, 512, 3), dtype=np.uint8)).save(_file(copied_site, 1))
    with pytest.raises(ImageFormatError, match=r"mode 'RGB'.*expected 8-bit grayscale"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_sixteen_bit_png_is_refused(copied_site: Path) -> None:
    Image.fromarray(np.zeros((512, 512), dtype=np.uint16)).save(_file(copied_site, 1))
    with pytest.raises(ImageFormatError, match="expected 8-bit grayscale"):
        load_site(copied_site, "RPE-01", 1, "B02", 1)


def test_decode_png_from_memory_matches_pil(rxrx1_root: Path) -> None:
    path = rxrx1_root / "train" / "HEPG2-01" / "Plate3" / "B02_s2_w5.png"
    np.testing.assert_array_equal(decode_png(path.read_bytes(), "upload.png"), np.array(Image.open(path)))
    with pytest.raises(ImageFormatError, match=r"upload\.png: not a PNG"):
        decode_png(b"hello", "upload.png")


def _bomb(width: int, height: int) -> bytes:
    """A PNG declaring width x height whose image data is a few bytes (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_an_image_error_naming_the_file() -> None:
    """PIL raises DecompressionBombError (not an OSError) above twice its pixel limit; it must not escape."""
    with pytest.raises(ImageFormatError, match=r"bomb\.png: image of 20000x20000 pixels is too large") as info:
        decode_png(_bomb(20_000, 20_000), "bomb.png")
    assert info.value.source == "bomb.png"


def test_a_size_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageFormatError, match=r"image of 9000x9000 pixels exceeds the 16,777,216-pixel limit"):
        decode_png(_bomb(9000, 9000), "big.png", max_pixels=4096**2)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\n", "ends after its signature"),
        (_bomb(10, 10)[:33], "before its image data (IDAT)"),
        (_bomb(0, 10), "PNG of 0x10 pixels"),
    ],
    ids=["signature-only", "header-only", "zero-width"],
)
def test_incomplete_pngs_say_what_is_missing_without_a_buffer_repr(data: bytes, words: str) -> None:
    with pytest.raises(ImageFormatError) as info:
        decode_png(data, "upload.png")
    assert words in info.value.problem
    assert "BytesIO" not in str(info.value)
    assert str(info.value).startswith("upload.png: ")


# --- PNG and TIFF of 8 and 16 bits (LoadData layouts); anything else refused saying what to do ---


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff_bytes(array: np.ndarray) -> bytes:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


def test_16_bit_png_and_tiff_decode_exactly() -> None:
    from phenoprint.data.images import decode_image

    plane = np.random.default_rng(0).integers(0, 65536, size=(9, 11)).astype(np.uint16)
    for data in (_png_bytes(plane), _tiff_bytes(plane)):
        got = decode_image(data, "x")
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, plane)
    eight = plane.astype(np.uint8)
    np.testing.assert_array_equal(decode_image(_tiff_bytes(eight), "x"), eight)


def test_rxrx1_pngs_stay_8_bit_only() -> None:
    with pytest.raises(ImageFormatError, match="expected 8-bit grayscale"):
        decode_png(_png_bytes(np.zeros((4, 4), dtype=np.uint16)), "x.png")


def test_multi_page_tiff_decodes_to_pages() -> None:
    from phenoprint.data.images import decode_image

    stack = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    np.testing.assert_array_equal(decode_image(_tiff_bytes(stack), "site.tif"), stack)


def test_jpeg2000_is_refused_saying_how_to_convert() -> None:
    from phenoprint.data.images import decode_image

    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 32
    with pytest.raises(ImageFormatError, match=r"site\.jp2: a JPEG-2000 image.*opj_decompress"):
        decode_image(jp2, "site.jp2")
    with pytest.raises(ImageFormatError, match="neither PNG nor TIFF"):
        decode_image(b"\xff\xd8\xff\xe0 jpeg", "site.jpg")


def test_float_tiff_is_refused() -> None:
    from phenoprint.data.images import decode_image

    with pytest.raises(ImageFormatError, match="float32 samples; expected 8- or 16-bit unsigned"):
        decode_image(_tiff_bytes(np.zeros((4, 4), dtype=np.float32)), "f.tif")
