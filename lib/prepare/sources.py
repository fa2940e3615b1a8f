"""One class per release format: `discover()` finds the chips (and counts what cannot be used, naming the
file), `read(chip, rows)` returns its bands in their units and its uint8 label (all rows, or rows [start, stop),
so a whole scene is never in memory at once).

A chip is the unit that never crosses a split or fold boundary: a 512 x 512 Sen1Floods11 chip, an s1-chips
chip, or a whole GeoTIFF scene.
"""
from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.data.bands import BAND_RANGES
from lib.errors import ConfigError, DataError
from lib.prepare.rasters import TIFF_SUFFIXES, header, read_image, read_label

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_SCALE = 10000.0  # Sen1Floods11 S2Hand: L1C reflectance x 10000 as int16
SEN1FLOODS11_SPLITS = {"flood_train_data.csv": "train", "flood_valid_data.csv": "val",
                       "flood_test_data.csv": "test", "flood_bolivia_data.csv": "bolivia"}
SEN1FLOODS11_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")


@dataclass
class Chip:
    chip_id: str
    files: dict[str, Path]          # role ("image_1", "label", "S1", "S2", ...) -> file
    height: int
    width: int
    georef: dict                    # crs, transform of the label raster (patch windows are in its pixels)
    split: str | None = None        # the release's own split, if it has one
    notes: list[str] = field(default_factory=list)


@dataclass
class Skip:
    reason: str                     # short and countable: "missing label", "unreadable file", ...
    message: str                    # names the file
    split: str | None = None


@dataclass
class ChipData:
    bands: dict[str, np.ndarray]    # float32 (H, W), NaN = no-data
    label: np.ndarray               # uint8 (H, W): 1 water, 0 not water, 255 no-data


class FileIndex:
    """Every GeoTIFF under a folder, found by base name anywhere below it or by a path relative to it."""

    def __init__(self, root: Path):
        if not root.is_dir():
            raise ConfigError(f"SOURCE {str(root)!r} is not a folder")
        self.root = root
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
        self.by_name = defaultdict(list)
        for path in self.paths:
            self.by_name[path.name].append(path)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def find(self, name: str) -> Path | None:
        """The file `name` ("a/b.tif": relative to the root; "b.tif": anywhere below it); None if absent."""
        if "/" in name:
            path = self.root / name
            return path if path.is_file() else None
        found = self.by_name.get(name, [])
        if len(found) > 1:
            raise DataError(f"{name}: found {len(found)} times under {self.root} "
                            f"({', '.join(self.relative(p) for p in found[:3])}); point SOURCE at one copy")
        return found[0] if found else None

    def matching(self, pattern: str) -> dict[str, Path]:
        """{chip: path} of the files that `pattern` ("{chip}_vv.tif", "images/{chip}.tif") matches. A chip that
        several files match (STAC Overflow's jrc_*/ and nasadem/ layers beside the labels) is a DataError listing
        them: which one is meant is never guessed."""
        regex = pattern_regex(pattern)
        matches = defaultdict(list)
        for path in self.paths:
            match = regex.fullmatch(self.relative(path) if "/" in pattern else path.name)
            if match:
                matches[match["chip"]].append(path)
        several = {chip: paths for chip, paths in matches.items() if len(paths) > 1}
        if several:
            chip, paths = sorted(several.items())[0]
            raise DataError(f"{self.root}: the pattern {pattern!r} matches {len(paths)} files of chip {chip} "
                            f"({', '.join(self.relative(p) for p in paths[:6])}{' ...' if len(paths) > 6 else ''})"
                            f"{f' and of {len(several) - 1} other chip(s)' if len(several) > 1 else ''}; put the "
                            f"folder of the one meant in the pattern: {self.choices(paths, pattern)}")
        return {chip: paths[0] for chip, paths in matches.items()}

    def choices(self, paths, pattern: str) -> str:
        """"'a/{chip}.tif' or 'b/{chip}.tif'": the pattern with each file's folder."""
        name = pattern.rsplit("/", 1)[-1]
        options = [f"'{Path(self.relative(p)).parent.as_posix()}/{name}'" for p in paths]
        return " or ".join([", ".join(options[:-1]), options[-1]]) if len(options) > 1 else options[0]

    def folders(self, paths) -> str:
        """Where files are, for a log line: 'train_labels/ (4 files)'."""
        counts = Counter(Path(self.relative(p)).parent.as_posix() for p in paths)
        return ", ".join(f"{'.' if folder == '.' else folder}/ ({n} file{'s' * (n != 1)})"
                         for folder, n in sorted(counts.items()))


def pattern_regex(pattern: str) -> re.Pattern:
    if pattern.count("{chip}") != 1:
        raise ConfigError(f"file-name pattern {pattern!r} must hold {{chip}} exactly once, e.g. {{chip}}_vv.tif")
    head, tail = pattern.split("{chip}")
    return re.compile(re.escape(head) + r"(?P<chip>[^/]+?)" + re.escape(tail))


def check_bands(bands) -> tuple[str, ...]:
    unknown = [band for band in bands if band not in BAND_RANGES]
    if unknown:
        raise ConfigError(f"--bands: {', '.join(unknown)} has no normalization range (known: {', '.join(BAND_RANGES)}); "
                          f"add one to BAND_RANGES in lib/data/bands.py")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"--bands {','.join(bands)}: a band is named twice")
    return tuple(bands)


class ChipProblem(DataError):
    """A chip whose files read but do not fit together; `reason` is its countable name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def probe(chip_id: str, files: dict[str, Path], split: str | None = None, counts: dict[str, int] | None = None,
          ) -> Chip:
    """A Chip from its files' headers: every file readable, all the same size, band counts as expected."""
    headers = {role: header(path) for role, path in files.items()}
    label = headers["label"]
    counts = {"label": 1, **(counts or {})}
    for role, head in headers.items():
        if (head["height"], head["width"]) != (label["height"], label["width"]):
            raise ChipProblem("size mismatch", f"{files[role]}: {head['height']} x {head['width']} pixels, but its "
                                               f"label {files['label'].name} has {label['height']} x {label['width']}")
        if role != "label":
            check_same_ground(files[role], head, files["label"], label)
        if role in counts and head["count"] != counts[role]:
            raise ChipProblem("wrong band count", f"{files[role]}: {head['count']} band(s), expected {counts[role]}"
                                                  + (f" ({head['pages']})" if head["pages"] else ""))
    return Chip(chip_id, dict(files), label["height"], label["width"],
                {"crs": label["crs"], "transform": label["transform"]}, split)


def check_same_ground(path: Path, head: dict, label_path: Path, label: dict) -> None:
    """An image and its label are paired by pixel position, so they must lie on one grid: the same CRS and the
    same bounds (within half a label pixel). Two rasters without any CRS are taken as they are (plain arrays)."""
    crs, label_crs = head["crs"], label["crs"]
    if crs is None and label_crs is None:
        return
    if crs is None or label_crs is None:
        raise ChipProblem("different grid", f"{path}: {'no CRS' if crs is None else crs} but its label {label_path.name} "
                                            f"has {'no CRS' if label_crs is None else label_crs}; they cannot be "
                                            f"checked to cover the same ground (georeference both, or neither)")
    from rasterio.crs import CRS
    if CRS.from_string(crs) != CRS.from_string(label_crs):
        raise ChipProblem("different grid", f"{path}: in {crs} but its label {label_path.name} is in {label_crs}; "
                                            f"pixels would be paired by position; reproject one onto the other's grid")
    tolerance = 0.5 * max(abs(label["transform"][0]), abs(label["transform"][4]))
    if max(abs(a - b) for a, b in zip(head["bounds"], label["bounds"])) > tolerance:
        bounds = lambda b: "(" + ", ".join(f"{v:.6g}" for v in b) + ")"  # noqa: E731
        raise ChipProblem("different grid", f"{path}: bounds {bounds(head['bounds'])} but its label {label_path.name} "
                                            f"covers {bounds(label['bounds'])} ({crs}); pixels would be paired by "
                                            f"position; crop or reproject one onto the other's grid")


def probe_or_skip(chip_id, files, split, counts, chips: list, skips: list) -> None:
    try:
        chips.append(probe(chip_id, files, split, counts))
    except DataError as error:
        skips.append(Skip(getattr(error, "reason", "unreadable file"), str(error), split))


class LabelOptions:
    """What the label values mean (--water, --land, --nodata, --ignore-nodata-tag)."""

    def __init__(self, water=(1,), land=(0,), nodata=(), honour_tag=True):
        self.water, self.land, self.nodata, self.honour_tag = tuple(water), tuple(land), tuple(nodata), honour_tag
        if set(self.water) & set(self.land):
            raise ConfigError(f"--water and --land share the value(s) {sorted(set(self.water) & set(self.land))}")

    def read(self, path: Path, rows=None) -> np.ndarray:
        return read_label(path, self.water, self.land, self.nodata, self.honour_tag, rows)


class Sen1Floods11:
    """The hand-labelled Sen1Floods11 release: S1Hand (VV, VH dB), S2Hand (13 bands, reflectance x 10000),
    LabelHand (-1 no data, 0, 1) and the flood_*_data.csv split files, anywhere below SOURCE."""
    name = "sen1floods11"

    def __init__(self, source: Path, split_dir: Path | None = None):
        self.index = FileIndex(source)
        self.split_dir = split_dir
        self.labels = LabelOptions(water=(1,), land=(0,), nodata=(-1,))
        self.bands = SEN1FLOODS11_BANDS
        self.split_paths: list[Path] = []   # the split files read (for prepare.json)

    def split_files(self) -> dict[str, Path]:
        root = self.split_dir or self.index.root
        found = {}
        for name, split in SEN1FLOODS11_SPLITS.items():
            paths = sorted(root.rglob(name))
            if len(paths) > 1:
                raise DataError(f"{name}: found {len(paths)} under {root} ({', '.join(map(str, paths[:3]))}); "
                                f"pass --split-dir with the folder of the hand-labelled splits")
            if paths:
                found[split] = paths[0]
        return found

    def listed_chips(self) -> dict[str, str]:
        """{chip: split} from the split files (rows: S1 file name, label file name)."""
        listed, found = {}, self.split_files()  # found once: each split file name is a walk of the source
        self.split_paths = list(found.values())
        for split, path in found.items():
            with open(path, newline="") as handle:
                for row in csv.reader(handle):
                    if not row or not row[0].strip():
                        continue
                    chip_id = row[0].strip().removesuffix(".tif").removesuffix("_S1Hand")
                    if chip_id in listed and listed[chip_id] != split:
                        raise DataError(f"{path}: chip {chip_id} is also in the {listed[chip_id]} split file; "
                                        f"a chip on two sides would leak")
                    listed[chip_id] = split
        return listed

    def discover(self) -> tuple[list[Chip], list[Skip]]:
        found = {p.name.removesuffix("_S1Hand.tif"): p for p in self.index.paths if p.name.endswith("_S1Hand.tif")}
        listed = self.listed_chips()
        chips, skips = [], []
        if listed:
            for chip_id in sorted(set(found) - set(listed)):
                skips.append(Skip("not in any split file", f"{found[chip_id]}: chip not listed in any flood_*_data.csv"))
        for chip_id in sorted(listed or found):
            split = listed.get(chip_id)
            files = {"S1": self.index.find(f"{chip_id}_S1Hand.tif"), "label": self.index.find(f"{chip_id}_LabelHand.tif"),
                     "S2": self.index.find(f"{chip_id}_S2Hand.tif")}
            missing = [role for role in ("S1", "label") if files[role] is None]
            if missing:
                names = " and ".join(f"{chip_id}_{'S1Hand' if r == 'S1' else 'LabelHand'}.tif" for r in missing)
                skips.append(Skip(f"missing {'/'.join(missing)} file", f"{names}: not found under {self.index.root}", split))
                continue
            if files["S2"] is None:
                del files["S2"]
            before = len(chips)
            probe_or_skip(chip_id, files, split, {"S1": 2, "S2": len(S2_BANDS)}, chips, skips)
            if len(chips) > before and "S2" not in files:
                chips[-1].notes.append("no S2: VV/VH only")
        return chips, skips

    def read(self, chip: Chip, rows: tuple[int, int] | None = None) -> ChipData:
        s1 = read_image(chip.files["S1"], rows=rows)
        bands = {"VV": s1[0], "VH": s1[1]}
        if "S2" in chip.files:
            wanted = ("B2", "B3", "B4", "B8")
            s2 = read_image(chip.files["S2"], rows=rows, indexes=[S2_BANDS.index(b) + 1 for b in wanted])
            b2, b3, b4, b8 = s2 / np.float32(S2_SCALE)
            bands.update(B2=b2, B3=b3, B4=b4, NDVI=normalized_difference(b8, b4), NDWI=normalized_difference(b3, b8))
        return ChipData(bands, self.labels.read(chip.files["label"], rows))


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), NaN where the sum is 0 or an input is NaN (no epsilon: a 0/0 pixel is no-data)."""
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        index = (a - b) / total
    index[total == 0] = np.nan
    return index.astype(np.float32)


class PatternChips:
    """Chips made of image GeoTIFFs and a label GeoTIFF matched by file-name patterns: `s1-chips` (VV, VH in
    dB, default the STAC Overflow / C2S layout) and `geotiff` (any bands, any size, whole scenes)."""

    def __init__(self, name: str, source: Path, image_patterns, label_pattern: str, bands, labels: LabelOptions,
                 image_nodata: float | None = None):
        self.name, self.index = name, FileIndex(source)
        self.image_patterns, self.label_pattern = list(image_patterns), label_pattern
        self.bands, self.labels, self.image_nodata = check_bands(bands), labels, image_nodata
        for pattern in (*self.image_patterns, label_pattern):
            pattern_regex(pattern)
        if len(self.image_patterns) not in (1, len(self.bands)):
            raise ConfigError(f"{len(self.image_patterns)} image patterns for {len(self.bands)} bands "
                              f"({','.join(self.bands)}): give one pattern per band, or one for a multi-band file")

    def discover(self) -> tuple[list[Chip], list[Skip]]:
        first = self.index.matching(self.image_patterns[0])
        labels = self.index.matching(self.label_pattern)
        if not first:
            raise DataError(f"{self.index.root}: no file matches the image pattern {self.image_patterns[0]!r} "
                            f"({len(self.index.paths)} GeoTIFFs found); set --image-pattern")
        chips, skips = [], []
        image_files = {*first.values(),
                       *(path for pattern in self.image_patterns[1:] for path in self.index.matching(pattern).values())}
        for chip_id in sorted(c for c in set(labels) - set(first) if labels[c] not in image_files):
            skips.append(Skip("label without image", f"{labels[chip_id]}: no image {self.image_patterns[0].format(chip=chip_id)}"))
        per_file = len(self.bands) if len(self.image_patterns) == 1 else 1
        for chip_id, path in sorted(first.items()):
            files = {"image_1": path}
            for k, pattern in enumerate(self.image_patterns[1:], start=2):
                files[f"image_{k}"] = self.index.find(pattern.format(chip=chip_id))
            files["label"] = labels.get(chip_id) or self.index.find(self.label_pattern.format(chip=chip_id))
            missing = [role for role, p in files.items() if p is None]
            if missing:
                names = [(self.label_pattern if r == "label" else self.image_patterns[int(r[6:]) - 1]).format(chip=chip_id)
                         for r in missing]
                reason = "missing label" if "label" in missing else "missing band file"
                skips.append(Skip(reason, f"{', '.join(names)}: not found under {self.index.root} (chip {chip_id})"))
                continue
            probe_or_skip(chip_id, files, None, {r: per_file for r in files if r != "label"}, chips, skips)
        # which files became images and labels, said once (a wrong layer taken as the label shows here)
        self.file_lines = [f"{role} files ({pattern}): {self.index.folders([c.files[key] for c in chips])}"
                           for role, pattern, key in (("image", self.image_patterns[0], "image_1"),
                                                      ("label", self.label_pattern, "label")) if chips]
        return chips, skips

    def read(self, chip: Chip, rows: tuple[int, int] | None = None) -> ChipData:
        if len(self.image_patterns) == 1:
            stack = read_image(chip.files["image_1"], self.image_nodata, rows)
            arrays = [stack[k] for k in range(len(self.bands))]
        else:
            arrays = [read_image(chip.files[f"image_{k + 1}"], self.image_nodata, rows)[0] for k in range(len(self.bands))]
        return ChipData(dict(zip(self.bands, arrays)), self.labels.read(chip.files["label"], rows))
