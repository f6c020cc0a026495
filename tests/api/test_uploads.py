"""Uploaded PNGs → sites: the happy path against the source arrays, and every refusal naming the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phenoprint.api import uploads
from phenoprint.api.uploads import NotPngError, UploadedFile, read_well
from phenoprint.errors import ImageFormatError
from tests.api.conftest import png, png_chunk, png_header, png_with_chunks


def _site(seed: int, size: tuple[int, int] = (8, 10)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(6, *size), dtype=np.uint8)


def _files(sites: dict[int, np.ndarray], prefix: str = "B02_") -> list[UploadedFile]:
    return [UploadedFile(f"{prefix}s{s}_w{c + 1}.png", png(a[c])) for s, a in sites.items() for c in range(6)]


def test_two_sites_in_any_order_decode_to_the_source_arrays() -> None:
    sites = {1: _site(1), 2: _site(2)}
    files = _files(sites)[::-1]
    well = read_well(files)
    assert well.site_numbers == (1, 2)
    assert well.well == "B02"
    np.testing.assert_array_equal(well.sites, np.stack([sites[1], sites[2]]))


@pytest.mark.parametrize("prefix", ["", "HUVEC-01_1_", "some folder/b02_", "C:\\data\\B02_"])
def test_the_well_prefix_is_optional(prefix: str) -> None:
    well = read_well(_files({2: _site(3)}, prefix))
    assert well.site_numbers == (2,)
    assert well.sites.shape == (1, 6, 8, 10)
    assert well.well == ("B02" if "02" in prefix else None)


def _refusal(files: list[UploadedFile], **kw) -> ImageFormatError:
    with pytest.raises(ImageFormatError) as info:
        read_well(files, **kw)
    return info.value


def test_a_missing_channel_is_named() -> None:
    files = [f for f in _files({1: _site(1)}) if "_w3" not in f.name and "_w5" not in f.name]
    err = _refusal(files)
    assert err.source == "site 1"
    assert "w3, w5 missing" in err.problem
    assert "w1-w6" in err.problem


def test_a_channel_sent_twice_is_named() -> None:
    files = _files({1: _site(1)})
    files.append(UploadedFile("copy_s1_w4.png", files[3].data))
    err = _refusal(files)
    assert err.source == "copy_s1_w4.png"
    assert "w4 of site 1 was sent twice" in err.problem
    assert "B02_s1_w4.png" in err.problem


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("B02_w1.png", "does not say its site and channel"),
        ("B02_s1_w1.tif", "does not say its site and channel"),
        ("", "does not say its site and channel"),
        ("B02_s1_w7.png", "channel w7 does not exist"),
        ("B02_s3_w1.png", "site s3 does not exist"),
    ],
)
def test_bad_names_are_refused_with_the_expected_form(name: str, words: str) -> None:
    files = _files({1: _site(1)})
    files[0] = UploadedFile(name, files[0].data)
    assert words in _refusal(files).problem


def test_too_many_and_no_files() -> None:
    files = _files({1: _site(1), 2: _site(2)})
    assert "13 files were sent, at most 12" in _refusal([*files, files[0]]).problem
    assert "no files were sent" in _refusal([]).problem
    assert "at most 6" in _refusal(files, max_sites=1).problem
    mixed = files[:3] + files[9:]
    assert "files of sites 1 and 2 were sent; send the 6 PNGs of one site" in _refusal(mixed, max_sites=1).problem


def test_files_of_two_wells_are_refused() -> None:
    files = _files({1: _site(1)}) + _files({2: _site(2)}, prefix="C03_")
    err = _refusal(files)
    assert "C03" in err.problem
    assert "B02" in err.problem
    assert "one well per request" in err.problem


def test_planes_of_different_sizes_within_and_across_sites() -> None:
    files = _files({1: _site(1)})
    files[2] = UploadedFile(files[2].name, png(np.zeros((12, 12), dtype=np.uint8)))
    err = _refusal(files)
    assert err.source == "B02_s1_w3.png"
    assert "differs from" in err.problem
    err = _refusal(_files({1: _site(1), 2: _site(2, size=(9, 9))}))
    assert err.source == "B02_s2_w1.png"
    assert "both sites" in err.problem


def test_not_a_png_is_its_own_error_and_damaged_pngs_are_image_errors() -> None:
    files = _files({1: _site(1)})
    bad = [*files[:5], UploadedFile(files[5].name, b"GIF89a" + b"\x00" * 40)]
    with pytest.raises(NotPngError, match=r"B02_s1_w6\.png: not a PNG"):
        read_well(bad)
    for data, words in [
        (files[5].data[:60], "truncated or corrupt"),
        (b"", "an empty file"),
        (png(np.zeros((8, 10, 3), dtype=np.uint8)), "mode 'RGB'"),
    ]:
        err = _refusal([*files[:5], UploadedFile(files[5].name, data)])
        assert not isinstance(err, NotPngError)
        assert words in err.problem


def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    err = _refusal(_files({1: _site(1)}), max_pixels=79)
    assert "image of 10x8 pixels exceeds the 79-pixel limit" in err.problem


def test_a_chunk_before_the_header_cannot_hide_the_image_size() -> None:
    """PIL decodes a PNG whose IHDR is not the first chunk; the size check used to read only the first chunk."""
    comment = png_chunk(b"tEXt", b"Comment\x00hello")
    files = [UploadedFile(f.name, png_with_chunks(f.data, before=comment)) for f in _files({1: _site(1, (40, 40))})]
    err = _refusal(files, max_pixels=1000)
    assert err.source == "B02_s1_w1.png"
    assert "first chunk is b'tEXt'" in err.problem
    assert "IHDR" in err.problem


def test_a_second_header_cannot_enlarge_the_image_past_the_limit() -> None:
    """A small IHDR first and the real (large) one second: PIL decodes the second."""
    small = png_header(8, 8)
    files = [UploadedFile(f.name, png_with_chunks(f.data, before=small)) for f in _files({1: _site(1, (40, 40))})]
    err = _refusal(files, max_pixels=1000)
    assert err.source == "B02_s1_w1.png"
    assert "second header" in err.problem


def test_every_file_is_checked_before_any_is_decoded(monkeypatch) -> None:
    """An over-size last file is refused before the first eleven are decoded: memory stays bounded by the limit."""
    decoded = []
    real = uploads.decode_png
    monkeypatch.setattr(uploads, "decode_png", lambda *a, **k: decoded.append(a[1]) or real(*a, **k))
    files = _files({1: _site(1), 2: _site(2)})
    files[-1] = UploadedFile(files[-1].name, png(np.zeros((100, 100), dtype=np.uint8)))
    err = _refusal(files, max_pixels=1000)
    assert err.source == "B02_s2_w6.png"
    assert "exceeds the 1,000-pixel limit" in err.problem
    assert decoded == []


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (7, 8)])
def test_images_below_the_minimum_size_are_refused_saying_the_minimum(size: tuple[int, int]) -> None:
    """A 1x1 site has no spread to standardize by: it used to give NaN embeddings. The minimum is 8x8."""
    err = _refusal(_files({1: np.full((6, *size), 7, dtype=np.uint8)}))
    assert err.source == "B02_s1_w1.png"
    assert "at least 8x8" in err.problem


def test_signature_only_header_only_and_zero_width_pngs_name_the_file_and_the_fault() -> None:
    good = _files({1: _site(1)})
    signature = good[0].data[:8]
    for data, words in [
        (signature, "ends after its signature"),
        (signature + png_header(10, 8), "before its image data"),
        (signature + png_header(0, 8) + good[0].data[33:], "0x8"),
    ]:
        err = _refusal([UploadedFile("B02_s1_w1.png", data), *good[1:]])
        assert err.source == "B02_s1_w1.png"
        assert words in err.problem, err.problem
        assert "BytesIO" not in str(err)


def test_a_file_name_longer_than_the_limit_is_refused_saying_what_to_send() -> None:
    files = _files({1: _site(1)})
    files[0] = UploadedFile("x" * 300 + "_s1_w1.png", files[0].data)
    err = _refusal(files)
    assert err.source.startswith("xxx")
    assert len(err.source) <= 120
    assert "310 characters" in err.problem
    assert "B02_s1_w1.png" in err.problem


NAMES = st.one_of(
    st.builds(
        lambda w, s, c: f"{w}s{s}_w{c}.png", st.sampled_from(["", "B02_", "x_"]), st.integers(0, 4), st.integers(0, 8)
    ),
    st.text(max_size=30),
)
DATA = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([png(np.zeros((3, 3), dtype=np.uint8)), png(np.ones((4, 3), dtype=np.uint8))]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(UploadedFile, NAMES, DATA), max_size=14))
def test_any_upload_is_decoded_or_refused_with_an_image_error(files: list[UploadedFile]) -> None:
    problem = None
    try:
        well = read_well(files)
    except ImageFormatError as exc:
        problem = exc.problem
    if problem is not None:
        assert problem  # every refusal says what was wrong
    else:
        assert well.sites.ndim == 4
        assert well.sites.shape[:2] == (len(well.site_numbers), 6)


@pytest.fixture(scope="module")
def real_planes(artifacts) -> list[bytes]:
    from tests.api.conftest import TARGET, site_pngs, well_of

    return list(site_pngs(artifacts.source, TARGET, well_of(artifacts.source, TARGET, 0), 1).values())


PART_NAMES = st.one_of(
    st.builds(lambda s, c: f"B02_s{s}_w{c}.png", st.integers(0, 3), st.integers(0, 7)),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40),
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_multipart_request_gets_a_200_or_a_clear_4xx_never_a_5xx(client, real_planes, data) -> None:
    from tests.api.conftest import TARGET

    contents = st.one_of(
        st.sampled_from(real_planes),
        st.sampled_from(real_planes).map(lambda b: b[: len(b) // 2]),
        st.binary(max_size=200),
        st.just(png(np.zeros((3, 3, 3), dtype=np.uint8))),
        st.just(png(np.zeros((7, 7), dtype=np.uint8))),
    )
    n = data.draw(st.integers(0, 14), label="parts")
    parts = [("files", (data.draw(PART_NAMES), data.draw(contents), "image/png")) for _ in range(n)]
    if data.draw(st.booleans(), label="a well's real files"):
        parts = [("files", (f"B02_s1_w{c + 1}.png", real_planes[c], "image/png")) for c in range(6)] + parts[:2]
    fields = {
        "experiment": data.draw(st.sampled_from([TARGET, "U2OS-77", ""])),
        "top_k": data.draw(st.sampled_from(["3", "0", "x"])),
    }
    path = data.draw(st.sampled_from(["/classify", "/embed", "/preview"]))
    r = client.post(path, files=parts or None, data=fields)
    assert r.status_code in (200, 404, 415, 422), r.text
    if r.status_code != 200:
        detail = r.json()["detail"]
        assert detail
        if isinstance(detail, list):
            assert all(e["msg"] for e in detail)


# --- models of named channels (LoadData): one part per channel name, or a multi-page TIFF per site ---

NAMED = ("DNA", "ER", "RNA", "AGP", "Mito")


def _tiff(array: np.ndarray) -> bytes:
    import io

    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="minisblack")
    return buffer.getvalue()


def _named_site(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(5, 9, 12)).astype(np.uint16)


def test_named_channels_per_part_and_multipage_decode_to_the_source_arrays() -> None:
    sites = {1: _named_site(1), 3: _named_site(3)}
    parts = [
        UploadedFile(f"C07_s{s}_{c.lower()}.tif", _tiff(a[k])) for s, a in sites.items() for k, c in enumerate(NAMED)
    ][::-1]
    well = read_well(parts, max_sites=4, channels=NAMED)
    assert well.site_numbers == (1, 3)
    assert well.well == "C07"
    assert well.sites.dtype == np.uint16
    np.testing.assert_array_equal(well.sites, np.stack([sites[1], sites[3]]))
    multipage = [UploadedFile(f"s{s}.tif", _tiff(a)) for s, a in sites.items()]
    np.testing.assert_array_equal(read_well(multipage, max_sites=4, channels=NAMED).sites, well.sites)


def test_named_channel_refusals_say_what_to_send() -> None:
    site = _named_site(0)
    parts = [UploadedFile(f"s1_{c}.tif", _tiff(site[k])) for k, c in enumerate(NAMED)]
    with pytest.raises(ImageFormatError, match="channel\\(s\\) Mito missing"):
        read_well(parts[:-1], channels=NAMED)
    with pytest.raises(ImageFormatError, match="'Brightfield' is not one of the model's DNA, ER, RNA, AGP, Mito"):
        read_well([*parts[:-1], UploadedFile("s1_Brightfield.tif", _tiff(site[0]))], channels=NAMED)
    with pytest.raises(ImageFormatError, match="multi-page TIFF needs 5 pages"):
        read_well([UploadedFile("s1.tif", _tiff(site[:3]))], channels=NAMED)
    with pytest.raises(ImageFormatError, match="files of 3 sites were sent; at most 2"):
        read_well([UploadedFile(f"s{s}.tif", _tiff(site)) for s in (1, 2, 3)], max_sites=2, channels=NAMED)
    with pytest.raises(NotPngError, match="neither PNG nor TIFF"):
        read_well([UploadedFile("s1_DNA.tif", b"GIF89a....")], channels=NAMED)
