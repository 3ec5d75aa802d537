"""``kernelcli info`` and the JSON of ``kernelcli kernels``, through the
installed command, checked against Pillow and NumPy read independently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from kernelcli.kernels import kernels_dir


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Pictures with the facts info reports: an sRGB profile and dpi, an EXIF
    orientation, several frames, 16 bits, a palette, a file that is no picture."""
    root = tmp_path_factory.mktemp("info")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (12, 7), (10, 20, 30)).save(root / "profile.png", icc_profile=srgb, dpi=(300, 150))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (16, 8)).save(root / "rotated.jpg", exif=exif.tobytes())
    frames = [Image.new("L", (5, 4), v) for v in (0, 100, 200)]
    frames[0].save(root / "three.gif", save_all=True, append_images=frames[1:])
    Image.new("P", (3, 3)).save(root / "palette.png")
    Image.fromarray(np.zeros((4, 6), np.uint16)).save(root / "deep.tif")  # 16-bit gray
    (root / "junk.png").write_bytes(b"not a picture")
    (root / "rgb16.png").write_bytes(_png_rgb16())
    return root, srgb


def _png_rgb16() -> bytes:
    """A 2x2 PNG of 16-bit RGB samples, written by hand (Pillow writes none)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes(12) for _ in range(2))
    header = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _info(run_installed, *args, cwd):
    got = run_installed(["info", *args], cwd=cwd)
    return got, json.loads(got.stdout) if "--json" in args and got.stdout else None


def test_info_json_against_pillow(run_installed, files):
    root, srgb = files
    names = ["profile.png", "rotated.jpg", "three.gif", "palette.png", "deep.tif", "rgb16.png"]
    got, facts = _info(run_installed, "--json", *names, cwd=root)
    assert got.returncode == 0, got.stderr
    by_name = {f["file"]: f for f in facts}
    for name in names:
        with Image.open(root / name) as img:
            assert (by_name[name]["width"], by_name[name]["height"]) == img.size
            assert by_name[name]["mode"] == img.mode
            assert by_name[name]["format"] == img.format
            assert by_name[name]["frames"] == getattr(img, "n_frames", 1)
    description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(__import__("io").BytesIO(srgb)))
    assert by_name["profile.png"]["icc_profile"] == {"description": description.strip(), "bytes": len(srgb)}
    with Image.open(root / "profile.png") as img:  # PNG stores dots per metre: 150.012 for 150
        assert by_name["profile.png"]["dpi"] == pytest.approx(list(img.info["dpi"]), abs=1e-3)
    assert by_name["rotated.jpg"]["orientation"] == 6
    assert by_name["three.gif"]["frames"] == 3
    assert by_name["palette.png"]["read_as"] == "RGB"
    assert by_name["deep.tif"]["bits"] == 16
    assert (by_name["rgb16.png"]["mode"], by_name["rgb16.png"]["bits"]) == ("RGB", 16)  # the file's samples
    assert by_name["rgb16.png"]["read_as"] == "RGB;16"  # as kernelcli reads it


def test_info_on_colour_pillow_cannot_hold(run_installed, tmp_path):
    """16-bit and float colour TIFF written by tifffile: info tells the mode
    kernelcli reads (float colour, which Pillow cannot open, through
    tifffile), the bits, the pages, and that the read turns a picture upright;
    the sizes and modes agree with what apply reads."""
    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(2)
    tifffile.imwrite(tmp_path / "f.tif", rng.standard_normal((2, 5, 7, 3)).astype(np.float32), photometric="rgb",
                     resolution=(300, 300), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "w.tif", rng.integers(0, 65536, (5, 7, 4)).astype(np.uint16), photometric="rgb",
                     extrasamples=[2], extratags=[(274, 3, 1, 8, True)])
    got, facts = _info(run_installed, "--json", "f.tif", "w.tif", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    f, w = facts
    assert (f["format"], f["width"], f["height"], f["mode"], f["read_as"], f["bits"], f["frames"]) == (
        "TIFF", 7, 5, "RGB;F", "RGB;F", 32, 2)
    assert f["dpi"] == [300, 300]
    assert (w["width"], w["height"], w["mode"], w["read_as"], w["bits"], w["orientation"]) == (
        7, 5, "RGBA", "RGBA;16", 16, 8)  # the size stored
    text = run_installed(["info", "w.tif"], cwd=tmp_path).stdout.decode()
    assert "orientation  8 left-bottom (rotated 90 anticlockwise); read turned upright, 5x7" in text
    made = run_installed(["apply", "identity", "w.tif", "w.npy"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert np.load(tmp_path / "w.npy").shape == (7, 5, 4)


def test_info_text_and_a_failing_file(run_installed, files):
    root, _ = files
    got = run_installed(["info", "rotated.jpg", "junk.png", "three.gif"], cwd=root)
    assert got.returncode == 1
    text = got.stdout.decode()
    assert "rotated.jpg: JPEG 16x8" in text and "orientation  6 right-top (rotated 90 clockwise)" in text
    assert "orientation  6 right-top (rotated 90 clockwise); read turned upright, 8x16" in text
    assert "three.gif: GIF 5x4" in text and "frames       3  (apply and conv filter each; --frame N picks one)" in text
    assert b"kernelcli: error: junk.png: not a recognised image or .npy file" in got.stderr


def test_info_on_a_npy_written_by_kernelcli(run_installed, files, samples):
    root, _ = files
    made = run_installed(["conv", "sharpen", str(samples / "rgba.png"), "maps.npy"], cwd=root)
    assert made.returncode == 0, made.stderr
    got, facts = _info(run_installed, "--json", "maps.npy", cwd=root)
    assert got.returncode == 0, got.stderr
    array = np.load(root / "maps.npy")
    assert facts[0]["shape"] == list(array.shape) and facts[0]["dtype"] == str(array.dtype)
    assert facts[0]["metadata"]["mode"] == "RGBA"


def test_info_on_a_picture_does_not_import_numpy_or_numba(files):
    root, _ = files
    code = ("import sys; from kernelcli.cli import cli; "
            "rc = cli.main(['info', 'profile.png', 'rotated.jpg'], standalone_mode=False); "
            "print(rc or 0, sorted(m for m in ('numpy', 'numba') if m in sys.modules))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert got.stdout.strip().splitlines()[-1] == "0 []", got.stdout + got.stderr


def test_kernels_json_lists_every_kernel_with_its_scale(run_installed):
    got = run_installed(["kernels", "--json"])
    assert got.returncode == 0, got.stderr
    listed = {k["name"]: k for k in json.loads(got.stdout)}
    assert set(listed) == {p.stem for p in kernels_dir().glob("*.txt")}
    assert listed["box"]["scale"] == pytest.approx(1 / 9) and (listed["box"]["rows"], listed["box"]["columns"]) == (3, 3)
    assert listed["sharpen"]["description"]


def test_kernels_show_json_gives_the_weights(run_installed):
    got = run_installed(["kernels", "show", "box:3,5", "--json"])
    assert got.returncode == 0, got.stderr
    shown = json.loads(got.stdout)
    np.testing.assert_allclose(shown["weights"], np.full((3, 5), 1 / 15))
    assert shown["shape"] == [3, 5] and shown["values"] == [[1.0] * 5] * 3


def test_a_damaged_npy_header_gets_one_message_from_every_reader(run_installed, run_cli, tmp_path):
    """info, a run, a dry run and bands of rows read a .npy header through one
    function: the same one-line message, with no object addresses in it and
    no talk of Python objects (the header is not a pickle)."""
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{garbage}       \n")
    expected = "bad.npy: not a readable .npy header: malformed node or string on line 1"
    info = run_installed(["info", bad])
    assert info.returncode == 1
    messages = [info.stderr.decode()]
    for args in (["conv", "edge", bad, tmp_path / "o.npy"], ["apply", "edge", bad, tmp_path / "o.npy", "--tile-rows", "4"],
                 ["apply", "edge", bad, tmp_path / "o.npy", "--dry-run"]):
        got = run_cli(args)
        assert got.exit_code == 1, got.output
        messages.append(got.output)
    for message in messages:
        assert expected in message and " at 0x" not in message and "Python objects" not in message
    assert not (tmp_path / "o.npy").exists()
    assert "not a readable .npy header" in (Path(__file__).parent.parent / "docs" / "errors.md").read_text("utf-8")
