"""docs/gallery.md and docs/make_gallery.py: every picture is made by the
command the page shows; the script, run on a small photo, makes each one
with the expected size and frame count, and none is blank."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

ROOT = Path(__file__).resolve().parent.parent
GALLERY_PAGE = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
SCRIPT = runpy.run_path(str(ROOT / "docs" / "make_gallery.py"), run_name="gallery")
FIGURES = SCRIPT["FIGURES"]


def test_every_figure_is_on_the_page_with_its_command():
    for figure in FIGURES:
        assert figure.command in GALLERY_PAGE, figure.name
        assert f"(gallery/{figure.name})" in GALLERY_PAGE, figure.name
        assert (ROOT / "docs" / "gallery" / figure.name).is_file(), figure.name
    blocks = GALLERY_PAGE.split("```")[1::2]  # the code blocks
    shown = {line for block in blocks for line in block.splitlines() if line.startswith("kernelcli ")}
    assert shown == {f.command for f in FIGURES}  # no command on the page that the script does not run
    assert "(docs/gallery.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_committed_gallery_stays_small():
    total = sum(p.stat().st_size for p in (ROOT / "docs" / "gallery").iterdir())
    assert total < 700 * 1024


@pytest.fixture(scope="module")
def small_gallery(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    photo = folder / "photo.png"
    Image.open(ROOT / "samples" / "gray.png").crop((100, 40, 148, 72)).save(photo)  # 48x32
    # the script finds this environment's kernelcli by itself: a PATH without it
    env = dict(os.environ, PATH=os.pathsep.join(["/usr/bin", "/bin"]))
    subprocess.run([sys.executable, str(ROOT / "docs" / "make_gallery.py"), "--out", str(folder / "out"),
                    "--photo", str(photo)], check=True, env=env, stdout=subprocess.DEVNULL, timeout=300)
    return folder / "out", (48, 32)


@pytest.mark.parametrize("figure", FIGURES, ids=[f.name for f in FIGURES])
def test_the_script_makes_each_picture(small_gallery, figure):
    folder, photo_size = small_gallery
    with Image.open(folder / figure.name) as im:
        frames = [np.asarray(f.convert("RGB"), dtype=np.float64) for f in ImageSequence.Iterator(im)]
        size = im.size
    assert len(frames) == figure.frames
    expected = {"photo": photo_size}.get(figure.size)
    if expected is not None:
        assert size == expected
    elif figure.size == "digit":
        assert size[0] >= 28 * 4 and size[1] >= 28 * 4  # the 28x28 digit, enlarged
    else:
        assert size[0] >= 120 and size[1] >= 100
    for frame in frames:
        assert frame.std() > 10, "blank"  # not one flat colour


#: The articles' figures each gallery picture redraws (the Intuitive Explanation's numbers): one
#: photo pooled three ways is figure 12; three maps pooled one by one (the digit's first layer) is 11.
FIGURES_DRAWN = {"convolution.gif": "figure 5", "filters.jpg": "the table after figure 5",
                 "feature-map.jpg": "figures 8 and 9", "pooling.gif": "figure 10", "pool-max.png": "figure 12",
                 "layer1-pooled.png": "figures 11, 13, 18 and 19", "kernels.png": "visualizations of filters"}


@pytest.mark.parametrize("name, cited", FIGURES_DRAWN.items())
def test_each_picture_is_under_the_heading_of_the_figure_it_redraws(name, cited):
    section = next(s for s in GALLERY_PAGE.split("\n## ")[1:] if f"(gallery/{name})" in s)
    assert cited in section.splitlines()[0], section.splitlines()[0]


def test_average_and_sum_pooling_pictures_differ(small_gallery):
    """The same colours (sum is 4 x average), told apart by their scale bars' numbers."""
    folder, _ = small_gallery
    avg, total = (np.asarray(Image.open(folder / f"pool-{k}.png").convert("RGB")) for k in ("avg", "sum"))
    assert avg.shape == total.shape and not np.array_equal(avg, total)
