"""Tests of the synthetic demo dataset (lib/synthetic/demo.py, make_demo_data.py) on tiny data."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lib.synthetic.demo import LOOKS, TRAIN_BANDS, VAL_BANDS, generate_patch, make_demo_dataset  # noqa: E402
from lib.synthetic.figure import render_demo_figure  # noqa: E402

N_TRAIN, N_VAL, SIZE, SEED = 6, 3, 128, 7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = make_demo_dataset(root, n_train=N_TRAIN, n_val=N_VAL, seed=SEED, size=SIZE)
    return root, summary


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A larger set (still small) for the statistics: every patch's VV, VH and label."""
    root = tmp_path_factory.mktemp("stats")
    make_demo_dataset(root, n_train=16, n_val=4, seed=SEED, size=SIZE)
    vv, vh, lab = [], [], []
    for split in ("train", "val"):
        for path in sorted((root / split / "lab").glob("*.npy")):
            lab.append(np.load(path))
            vv.append(np.load(root / split / "img" / f"{path.stem}_VV.npy"))
            vh.append(np.load(root / split / "img" / f"{path.stem}_VH.npy"))
    return np.stack(vv), np.stack(vh), np.stack(lab)


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def test_layout_dtypes_and_shapes(tiny):
    root, summary = tiny
    assert summary["n_patches"] == N_TRAIN + N_VAL and summary["splits"] == {"train": N_TRAIN, "val": N_VAL}
    for split, count, bands in (("train", N_TRAIN, TRAIN_BANDS), ("val", N_VAL, VAL_BANDS)):
        labels = sorted((root / split / "lab").glob("*.npy"))
        assert len(labels) == count
        images = sorted((root / split / "img").glob("*.npy"))
        assert len(images) == count * len(bands)
        for path in images:
            patch_id, _, band = path.stem.rpartition("_")
            assert band in bands and patch_id.startswith("demo_") and "_" not in patch_id[len("demo_"):]
            assert (root / split / "lab" / f"{patch_id}.npy").exists()
            image = np.load(path)
            assert image.dtype == np.float32 and image.shape == (SIZE, SIZE)
        for path in labels:
            label = np.load(path)
            assert label.dtype == np.uint8 and label.shape == (SIZE, SIZE)
            assert set(np.unique(label)) <= {0, 1, 255}
    assert not list((root / "val" / "img").glob("*_B2.npy")), "val holds VV and VH only"
    train_ids = {p.stem for p in (root / "train" / "lab").glob("*.npy")}
    val_ids = {p.stem for p in (root / "val" / "lab").glob("*.npy")}
    assert not train_ids & val_ids


def test_deterministic_per_seed(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    make_demo_dataset(again, n_train=N_TRAIN, n_val=N_VAL, seed=SEED, size=SIZE)
    assert all_files(root) == all_files(again)
    other = tmp_path / "other"
    make_demo_dataset(other, n_train=N_TRAIN, n_val=N_VAL, seed=SEED + 1, size=SIZE)
    first, second = all_files(root), all_files(other)
    assert first.keys() == second.keys()
    assert first["train/img/demo_00000_VV.npy"] != second["train/img/demo_00000_VV.npy"]
    assert sum(first[k] != second[k] for k in first if k.startswith("train/lab")) >= N_TRAIN // 2


def test_sar_backscatter_levels(pool):
    vv, vh, lab = pool
    water, land = lab == 1, lab == 0
    assert vv[water].mean() < vv[land].mean() - 5.0
    assert -23.0 < np.median(vv[water]) < -16.0 and -14.0 < np.median(vv[land]) < -7.0
    assert vh.mean() < vv.mean() - 4.0 and vh[land].mean() < vv[land].mean()
    # dB values are not clipped to the normalization range
    assert vv.min() < -22.3 and vv.max() > 0.0


def test_water_and_land_levels_match_real_sentinel1(pool):
    """The documented ranges (docs/real-sar.md section 3): demo water as bright as real water (calm,
    wind-roughened and shallow water up to about -18 dB VH), land at the real chips' levels, and patches
    that are mostly water, as real flood chips are."""
    vv, vh, lab = pool
    water, land = lab == 1, lab == 0
    q_water = np.percentile(vh[water], [5, 50, 75, 95])
    q_land = np.percentile(vh[land], [5, 50])
    assert -37.0 < q_water[0] < -31.0 and -29.0 < q_water[1] < -24.0
    assert -25.0 < q_water[2] < -20.0 and -19.0 < q_water[3] < -14.0
    assert -27.0 < q_land[0] < -22.0 and -18.5 < q_land[1] < -15.0
    assert -21.0 < np.median(vv[water]) < -16.0 and -12.0 < np.median(vv[land]) < -8.0
    shares = [(lab_i == 1).sum() / max((lab_i != 255).sum(), 1) for lab_i in lab]
    assert max(shares) > 0.6


def test_speckle_statistics(pool):
    """Inside 8x8 blocks of calm water the linear intensity has CV close to 1/sqrt(L)."""
    vv, _, lab = pool
    n, h, w = vv.shape
    blocks_vv = vv.reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 64)
    blocks_lab = lab.reshape(n, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 64)
    calm = (blocks_lab == 1).all(axis=1) & (blocks_vv.mean(axis=1) < -15.0)
    assert calm.sum() >= 20
    intensity = 10.0 ** (blocks_vv[calm].astype(np.float64) / 10.0)
    cv = np.median(intensity.std(axis=1) / intensity.mean(axis=1))
    assert 0.3 < cv < 0.8
    assert abs(cv - 1.0 / np.sqrt(LOOKS)) < 0.15


def test_speckle_in_generated_calm_water():
    bands, _, info = generate_patch(np.random.default_rng(3), 128)
    calm = info["calm_water"]
    assert calm.sum() > 200
    ratio = 10.0 ** ((bands["VV"][calm] - info["vv_mean_db"][calm]) / 10.0)  # speckle alone
    assert abs(ratio.mean() - 1.0) < 0.1 and 0.4 < ratio.std() < 0.6


def test_dry_patches_nodata_and_water_fraction(tiny, pool):
    _, summary = tiny
    assert summary["dry_patches"] > 0 and summary["nodata_patches"] > 0
    _, _, lab = pool
    dry = [(patch == 1).sum() == 0 for patch in lab]
    assert 0 < sum(dry) < len(lab)
    nodata = lab == 255
    assert nodata.any()
    for patch in lab[nodata.any(axis=(1, 2))]:  # no-data is a strip at one border
        mask = patch == 255
        assert mask[0].all() or mask[-1].all() or mask[:, 0].all() or mask[:, -1].all()
        assert mask.mean() < 0.15
    water_fraction = (lab == 1).sum() / (lab != 255).sum()
    assert 0.05 < water_fraction < 0.5


def test_kfold_val_sets_disjoint_and_cover_pool(tmp_path):
    summary = make_demo_dataset(tmp_path, n_train=5, n_val=2, folds=3, seed=1, size=64)
    pool = {f"demo_{i:05d}" for i in range(7)}
    assert summary["folds"] == 3 and not (tmp_path / "train").exists()
    seen: list[str] = []
    for k in (1, 2, 3):
        fold = tmp_path / f"fold_{k}"
        val = {p.stem for p in (fold / "val" / "lab").glob("*.npy")}
        train = {p.stem for p in (fold / "train" / "lab").glob("*.npy")}
        assert val and train == pool - val
        assert len(list((fold / "train" / "img").glob("*.npy"))) == len(train) * len(TRAIN_BANDS)
        assert len(list((fold / "val" / "img").glob("*.npy"))) == len(val) * len(VAL_BANDS)
        seen += sorted(val)
    assert len(seen) == len(set(seen)) and set(seen) == pool
    # a patch is the same wherever it lands
    a = np.load(tmp_path / "fold_1" / "val" / "img" / "demo_00000_VV.npy")
    b = np.load(tmp_path / "fold_2" / "train" / "img" / "demo_00000_VV.npy")
    assert np.array_equal(a, b)


def best_threshold_iou(vv: np.ndarray, lab: np.ndarray) -> float:
    edges = np.arange(-40.0, 15.01, 0.25)
    values = np.clip(vv, edges[0], edges[-1] - 1e-3)
    water = np.histogram(values[lab == 1], edges)[0]
    land = np.histogram(values[lab == 0], edges)[0]
    iou = np.cumsum(water) / (water.sum() + np.cumsum(land))  # pixels darker than each threshold
    return float(iou.max())


def test_single_vv_threshold_is_not_enough(pool, tiny):
    vv, _, lab = pool
    iou = best_threshold_iou(vv, lab)
    assert 0.3 < iou < 0.95
    assert 0.3 < tiny[1]["vv_threshold_iou"] < 0.95


def test_optical_bands_and_indices(tiny):
    root, _ = tiny
    for path in sorted((root / "train" / "img").glob("*.npy")):
        band = path.stem.rpartition("_")[2]
        image = np.load(path)
        assert np.isfinite(image).all()
        if band in ("NDVI", "NDWI"):
            assert image.min() >= -1.0 and image.max() <= 1.0
        elif band in ("B2", "B3", "B4"):
            assert image.min() >= 0.0 and image.max() <= 1.0
    lab = np.load(root / "train" / "lab" / "demo_00000.npy")
    ndwi = np.load(root / "train" / "img" / "demo_00000_NDWI.npy")
    if (lab == 1).any():
        assert ndwi[lab == 1].mean() > ndwi[lab == 0].mean()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, n_train=0, n_val=0)
    with pytest.raises(ValueError):
        make_demo_dataset(tmp_path, n_train=2, n_val=1, folds=4)


def test_script_and_figure(tmp_path):
    out = tmp_path / "cli"
    figure = tmp_path / "fig.png"
    result = subprocess.run([sys.executable, "make_demo_data.py", "--out", str(out), "--train", "3", "--val", "1",
                             "--size", "64", "--seed", "3", "--figure", str(figure)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 patches" in result.stdout and "dry" in result.stdout
    assert len(list((out / "train" / "lab").glob("*.npy"))) == 3
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_demo_figure_from_folds(tmp_path):
    make_demo_dataset(tmp_path / "k", n_train=3, n_val=2, folds=2, seed=0, size=64)
    out = render_demo_figure(tmp_path / "k", tmp_path / "f.png", n=2)
    assert out.exists() and out.stat().st_size > 1000
