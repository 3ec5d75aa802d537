"""TIFF tags that place a picture on the ground (GeoTIFF) are kept from a
TIFF input into a TIFF output of the same grid, and dropped with a note when
the grid changes or the output is not a TIFF. Inputs written by Pillow and
tifffile; the output read back by tifffile."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

tifffile = pytest.importorskip("tifffile")

SCALE = (30.0, 30.0, 0.0)
TIEPOINT = (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)
KEYS = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
ASCII = "WGS 84 / UTM zone 33N|"


def _tifffile_geotiff(path, pixels, **kwargs):
    tifffile.imwrite(path, pixels, extratags=[(33550, 12, 3, SCALE, True), (33922, 12, 6, TIEPOINT, True),
                                              (34735, 3, len(KEYS), KEYS, True),
                                              (34737, 2, len(ASCII) + 1, ASCII, True)],
                     resolution=(300.0, 300.0), resolutionunit="INCH", **kwargs)


def _pillow_geotiff(path, pixels):
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    for code, kind, value in ((33550, 12, SCALE), (33922, 12, TIEPOINT), (34735, 3, KEYS), (34737, 2, ASCII)):
        tags[code] = value
        tags.tagtype[code] = kind
    Image.fromarray(pixels).save(path, tiffinfo=tags, dpi=(300, 300))


def _place(path):
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        found = {code: tags[code].value for code in (33550, 33922, 34735, 34737) if code in tags}
        dpi = tags[282].value[0] / tags[282].value[1] if 282 in tags else None
    return {code: tuple(v) if isinstance(v, (tuple, list, np.ndarray)) else v for code, v in found.items()}, dpi


WANT = {33550: SCALE, 33922: TIEPOINT, 34735: KEYS, 34737: ASCII}


@pytest.mark.parametrize("writer, pixels", [
    ("tifffile", np.arange(20 * 24, dtype=np.uint16).reshape(20, 24) * 7),  # an elevation model
    ("tifffile", np.random.default_rng(0).normal(100, 30, (20, 24)).astype(np.float32)),
    ("tifffile", np.random.default_rng(1).integers(0, 65536, (20, 24, 3)).astype(np.uint16)),
    ("pillow", np.random.default_rng(2).integers(0, 256, (20, 24, 3)).astype(np.uint8)),
    ("pillow", np.random.default_rng(3).integers(0, 256, (20, 24)).astype(np.uint8)),
])
def test_geotiff_tags_are_kept_through_a_filter(tmp_path, run_installed, writer, pixels):
    path = tmp_path / "scene.tif"
    if writer == "tifffile":
        _tifffile_geotiff(path, pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
    else:
        _pillow_geotiff(path, pixels)
    proc = run_installed(["apply", "gaussian:1", path, tmp_path / "out.tif"])
    assert proc.returncode == 0, proc.stderr
    place, dpi = _place(tmp_path / "out.tif")
    assert place == WANT
    assert dpi == pytest.approx(300.0)
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == pixels.shape and out.dtype == pixels.dtype


def test_geotiff_tags_are_dropped_when_the_grid_changes(tmp_path, run_installed):
    _tifffile_geotiff(tmp_path / "scene.tif", np.zeros((20, 24), np.uint16))
    proc = run_installed(["apply", "box", tmp_path / "scene.tif", tmp_path / "out.tif", "--pool", "max"])
    assert proc.returncode == 0, proc.stderr
    assert b"dropped the GeoTIFF tags: the output's 10x12 grid is not the input's 20x24" in proc.stderr
    assert _place(tmp_path / "out.tif")[0] == {}


def test_geotiff_tags_into_another_format_are_dropped_with_a_note(tmp_path, run_installed):
    _tifffile_geotiff(tmp_path / "scene.tif", np.zeros((20, 24), np.uint16))
    proc = run_installed(["apply", "box", tmp_path / "scene.tif", tmp_path / "out.png"])
    assert proc.returncode == 0, proc.stderr
    assert b"dropped the TIFF tags that place the picture (GeoTIFF): only TIFF holds them" in proc.stderr
