"""Fail safe, second round (issue 25) for the data tools: make_demo_data.py never mixes demo patches into
another dataset, prepare_data.py reads nothing silently wrong, and their failures are one error line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from conftest import ROOT, write_geotiff
from lib.cli import run
from lib.errors import DataError, OutputError
from lib.synthetic.demo import make_demo_dataset
from prepare_data import main as prepare_main


def run_main(monkeypatch, capsys, main, argv: list[str], code: int = 1) -> str:
    """A tool run as its command line runs it; returns stderr after asserting the exit status."""
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == code
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------ make_demo_data.py

def real_dataset(root):
    for split in ("train", "val"):
        for folder in ("img", "lab"):
            (root / split / folder).mkdir(parents=True)
        np.save(root / split / "img" / "chip_1_VV.npy", np.zeros((16, 16), np.float32))
        np.save(root / split / "lab" / "chip_1.npy", np.zeros((16, 16), np.uint8))
    return sorted(p.relative_to(root) for p in root.rglob("*.npy"))


def test_demo_data_into_a_real_dataset_is_refused_and_adds_nothing(tmp_path, monkeypatch, capsys):
    import make_demo_data
    files = real_dataset(tmp_path / "data")
    err = run_main(monkeypatch, capsys, make_demo_data.main,
                   ["make_demo_data.py", "--out", str(tmp_path / "data"), "--train", "2", "--val", "1", "--size", "16"])
    assert err.startswith(f"error: {tmp_path / 'data'}: holds 4 patch file(s) that are not demo data") and "--overwrite" in err
    assert sorted(p.relative_to(tmp_path / "data") for p in (tmp_path / "data").rglob("*.npy")) == files


def test_demo_data_overwrite_replaces_the_dataset_and_a_rerun_replaces_its_own_patches(tmp_path):
    real_dataset(tmp_path / "data")
    summary = make_demo_dataset(tmp_path / "data", n_train=2, n_val=1, size=16, overwrite=True)
    assert summary["removed"] == 4 and not list((tmp_path / "data").rglob("chip_*"))
    again = make_demo_dataset(tmp_path / "data", n_train=2, n_val=1, size=16)  # its own patches: no flag needed
    assert again["removed"] == 0


def test_demo_data_onto_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        make_demo_dataset(tmp_path / "file", n_train=2, n_val=1, size=16)


# ------------------------------------------------------------------------------------------ prepare_data.py

SIZE, PATCH = 8, 4
UTM_GRID = Affine(10.0, 0.0, 440_000.0, 0.0, -10.0, 4_480_000.0)     # EPSG:32630
DEGREES = Affine(0.0001, 0.0, -3.7, 0.0, -0.0001, 40.4)              # EPSG:4326, near the same place


def stac_chip(root: Path, chip: str, seed: int, label_folder: str = "train_labels", crs="EPSG:32630",
              transform=UTM_GRID, label_crs=None, label_transform=None) -> None:
    rng = np.random.default_rng(seed)
    for band, mean in (("vv", -12), ("vh", -19)):
        write_geotiff(root / "train_features" / f"{chip}_{band}.tif", rng.normal(mean, 3, (SIZE, SIZE)).astype(np.float32),
                      crs=crs, transform=transform)
    write_geotiff(root / label_folder / f"{chip}.tif", rng.integers(0, 2, (SIZE, SIZE)).astype(np.uint8),
                  crs=label_crs or crs, transform=label_transform or transform)


def plain_label(path: Path) -> None:
    """The label rewritten without any georeferencing (a plain array, as tifffile or PIL write)."""
    from PIL import Image
    import rasterio
    with rasterio.open(path) as dataset:
        label = dataset.read(1)
    path.unlink()
    Image.fromarray(label).save(path)


def prepare(source: Path, out: Path, *extra: str) -> dict:
    return prepare_main(["s1-chips", str(source), "--out", str(out), "--patch", str(PATCH), *extra])


def test_default_label_pattern_matching_several_layers_is_an_error_listing_them(tmp_path, capsys):
    source = tmp_path / "stac"
    for k, chip in enumerate(["awc00", "kuo01"]):
        stac_chip(source, chip, k)
        for layer in ("jrc_change", "nasadem"):  # STAC Overflow's supplementary layers: same names as the labels
            stac_chip(source, chip, k + 10, label_folder=layer)
    with pytest.raises(DataError) as error:
        prepare(source, tmp_path / "out")
    message = str(error.value)
    assert "the pattern '{chip}.tif' matches 3 files of chip awc00 (jrc_change/awc00.tif, nasadem/awc00.tif, " \
           "train_labels/awc00.tif) and of 1 other chip(s)" in message
    assert "'train_labels/{chip}.tif'" in message and not (tmp_path / "out").exists()
    prepare(source, tmp_path / "out", "--label-pattern", "train_labels/{chip}.tif", "--val-share", "0.5")
    assert "label files (train_labels/{chip}.tif): train_labels/ (2 files)" in capsys.readouterr().out


def test_several_image_files_of_one_chip_are_an_error_too(tmp_path):
    source = tmp_path / "stac"
    stac_chip(source, "awc00", 0)
    stac_chip(source / "copy", "awc00", 1)
    with pytest.raises(DataError, match=r"'\{chip\}_vv.tif' matches 2 files of chip awc00"):
        prepare(source, tmp_path / "out", "--label-pattern", "train_labels/{chip}.tif")


def test_a_label_in_degrees_with_an_image_in_utm_is_not_paired_by_position(tmp_path, capsys):
    source = tmp_path / "stac"
    stac_chip(source, "awc00", 0, label_crs="EPSG:4326", label_transform=DEGREES)
    stac_chip(source, "kuo01", 1)
    record = prepare(source, tmp_path / "out", "--val-share", "0")
    err = capsys.readouterr().err
    assert "awc00_vv.tif: in EPSG:32630 but its label awc00.tif is in EPSG:4326; pixels would be paired by position" in err
    assert record["splits"]["(not split)"]["skipped"] == {"different grid": 1} and list(record["chips"]) == ["kuo01"]


@pytest.mark.parametrize("case", ["shifted", "no crs"])
def test_other_bounds_or_a_missing_crs_are_not_paired_by_position_either(tmp_path, case, capsys):
    source = tmp_path / "stac"
    if case == "shifted":  # 1.28 km east: the same CRS, another place
        stac_chip(source, "awc00", 0, label_transform=UTM_GRID @ Affine.translation(128, 0))
        expected = "bounds (440000, 4.47992e+06, 440080, 4.48e+06) but its label awc00.tif covers (441280"
    else:
        stac_chip(source, "awc00", 0)
        plain_label(source / "train_labels" / "awc00.tif")
        expected = "awc00_vv.tif: EPSG:32630 but its label awc00.tif has no CRS"
    with pytest.raises(DataError, match=r"no usable chip \(\(not split\): 0 chips, 0 patches written; skipped 1 "
                                         r"\(different grid: 1\)\)"):
        prepare(source, tmp_path / "out", "--val-share", "0")
    assert expected in capsys.readouterr().err


def test_no_training_split_is_an_error_not_exit_0(tmp_path):
    source = tmp_path / "stac"
    stac_chip(source, "awc00", 0)
    stac_chip(source, "kuo01", 1)
    # every pixel of kuo01's label no-data: its patches are dropped; pick the seed that sends it to train
    write_geotiff(source / "train_labels" / "kuo01.tif", np.full((SIZE, SIZE), 255, np.uint8), crs="EPSG:32630",
                  transform=UTM_GRID)
    for seed in range(20):
        out = tmp_path / f"out{seed}"
        try:
            record = prepare(source, out, "--val-share", "0.5", "--seed", str(seed))
        except DataError as error:
            assert "no training data written: train got no patch" in str(error) and "--out is as it was" in str(error)
            assert not out.exists()
            return
        assert record["splits"]["train"]["patches"] > 0
    pytest.fail("no seed sent the empty chip to train")


def test_a_multi_page_tiff_is_read_as_bands(tmp_path):
    from PIL import Image
    source = tmp_path / "c2s"
    stac_chip(source, "awc00", 0)  # only for its label
    rng = np.random.default_rng(3)
    pages = rng.normal(-15, 4, (2, SIZE, SIZE)).astype(np.float32)
    images = [Image.fromarray(page) for page in pages]  # one page per band, as tifffile writes (bands, H, W)
    images[0].save(source / "awc00_S1.tif", save_all=True, append_images=images[1:])
    plain_label(source / "train_labels" / "awc00.tif")  # plain arrays on both sides: paired by position, as documented
    prepare(source, tmp_path / "out", "--image-pattern", "{chip}_S1.tif", "--label-pattern", "train_labels/{chip}.tif",
            "--val-share", "0")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train" / "img" / "awc00_r1c0_VH.npy"), pages[1, 4:, :4])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "train" / "img" / "awc00_r0c1_VV.npy"), pages[0, :4, 4:])


def test_pages_of_other_sizes_are_not_bands_and_the_skip_says_why(tmp_path, capsys):
    from PIL import Image
    source = tmp_path / "c2s"
    stac_chip(source, "awc00", 0)
    plain_label(source / "train_labels" / "awc00.tif")
    first = Image.fromarray(np.zeros((SIZE, SIZE), np.float32))
    first.save(source / "awc00_S1.tif", save_all=True, append_images=[Image.fromarray(np.zeros((4, 4), np.float32))])
    with pytest.raises(DataError, match="no usable chip"):
        prepare(source, tmp_path / "out", "--image-pattern", "{chip}_S1.tif", "--label-pattern", "train_labels/{chip}.tif")
    assert "1 band(s), expected 2 (a multi-page TIFF whose 2 pages differ in size or type" in capsys.readouterr().err


def test_a_complex_raster_is_refused_not_read_from_its_real_part(tmp_path, capsys):
    source = tmp_path / "stac"
    stac_chip(source, "awc00", 0)
    slc = (np.ones((SIZE, SIZE)) + 1j).astype(np.complex64)
    write_geotiff(source / "train_features" / "awc00_vv.tif", slc, crs="EPSG:32630", transform=UTM_GRID)
    with pytest.raises(DataError, match="no usable chip"):
        prepare(source, tmp_path / "out")
    assert "awc00_vv.tif: complex pixels (complex64" in capsys.readouterr().err


def test_a_truncated_geotiff_names_the_file_and_gdals_reason(tmp_path, capsys):
    source = tmp_path / "stac"
    for k, chip in enumerate(["awc00", "kuo01"]):
        stac_chip(source, chip, k)
    path = source / "train_features" / "awc00_vv.tif"
    write_geotiff(path, np.random.default_rng(0).normal(-12, 3, (SIZE, SIZE)).astype(np.float32), crs="EPSG:32630",
                  transform=UTM_GRID)
    with open(path, "r+b") as handle:  # the header stays, the pixels are cut short
        handle.truncate(path.stat().st_size - 200)
    record = prepare(source, tmp_path / "out", "--val-share", "0")
    err = capsys.readouterr().err
    assert f"{path}: " in err and "Read failed. See previous exception" not in err
    assert "truncated or damaged" in err or "not a readable GeoTIFF" in err
    assert list(record["chips"]) == ["kuo01"] or record["chips"]["awc00"]["patches"] == {}


def test_ctrl_c_in_prepare_data_is_one_line_and_out_untouched(tmp_path):
    source = tmp_path / "stac"
    stac_chip(source, "awc00", 0)
    code = ("import sys, prepare_data, lib.prepare.convert as c\n"
            "def stop(*a, **k): raise KeyboardInterrupt\n"
            "c.convert_chip = stop\n"
            f"sys.argv = ['prepare_data.py', 's1-chips', {str(source)!r}, '--out', {str(tmp_path / 'out')!r}]\n"
            "from lib.cli import run\nrun(prepare_data.main_command)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[-1] == "interrupted: nothing was written to --out (an existing one is as it was)"
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stac"]  # no staging folder left
