"""prepare(): discover the chips, assign splits or folds, cut and write patches into a staging folder,
write prepare.json and the data report there, and only then put the folder at --out."""
from __future__ import annotations

import shutil
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lib.errors import DataError, OutputError
from lib.prepare.output import check_out, commit, staging_folder, versions, write_json, write_patch
from lib.prepare.rasters import LabelValueError
from lib.prepare.report import write_report
from lib.prepare.sources import Skip
from lib.prepare.splits import assign, check_sizes, group_of, strip_patches, strip_rows, valid_share

UNASSIGNED = "(not split)"  # skips found before a chip has a split


@dataclass
class Options:
    out: Path
    patch: int = 256
    stride: int | None = None       # None: the patch size (no overlap)
    folds: int | None = None
    seed: int = 42
    group_by: str = "chip"
    val_share: float = 0.2
    min_valid: float = 0.0          # patches with a smaller share of valid pixels are dropped (and counted)
    overwrite: bool = False


class Tally:
    """Per output split: chips and patches written, and what was skipped and why."""

    def __init__(self):
        self.chips, self.patches = Counter(), Counter()
        self.skipped: dict[str, Counter] = defaultdict(Counter)
        self.notes: dict[str, Counter] = defaultdict(Counter)   # written, but worth a count: "no S2: VV/VH only"

    def lines(self) -> list[str]:
        lines = []
        for split in sorted(set(self.chips) | set(self.patches) | set(self.skipped), key=str):
            line = f"{split}: {self.chips[split]} chips, {self.patches[split]} patches written"
            if self.notes[split]:
                line += "".join(f"; {n} chips {note}" for note, n in sorted(self.notes[split].items()))
            if self.skipped[split]:
                reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped[split].items()))
                line += f"; skipped {sum(self.skipped[split].values())} ({reasons})"
            lines.append(line)
        return lines

    def as_dict(self) -> dict:
        return {split: {"chips": self.chips[split], "patches": self.patches[split], "skipped": dict(self.skipped[split]),
                        "notes": dict(self.notes[split])}
                for split in sorted(set(self.chips) | set(self.patches) | set(self.skipped), key=str)}


def prepare(source, options: Options, settings: dict, log=print) -> dict:
    """Convert `source` (a lib.prepare.sources class) into options.out; returns the provenance record."""
    root = source.index.root
    check_out(options.out, root, options.overwrite)
    stride = options.stride or options.patch
    check_sizes(options.patch, stride)
    chips, skips = source.discover()
    for line in getattr(source, "file_lines", []):
        log(line)
    tally = Tally()
    for skip in skips:
        log(f"skipped: {skip.message}", file=sys.stderr)
        tally.skipped[skip.split or UNASSIGNED][skip.reason] += 1
    if not chips:
        raise DataError(f"{root}: no usable chip ({'; '.join(tally.lines()) or 'no GeoTIFF found'})")
    destinations, notes = assign(chips, options.folds, options.val_share, options.group_by, options.seed)
    log(f"{source.name}: {len(chips)} chips from {root} -> {options.out} ({options.patch} px patches, stride {stride})")
    staging = staging_folder(options.out)
    try:
        record = {"format": source.name, "source": str(root.resolve()), "out": str(options.out),
                  "options": {**asdict(options), **settings, "out": str(options.out), "stride": stride}, "versions": versions(),
                  "files": {relative_name(root, p): p.stat().st_size for p in getattr(source, "split_paths", [])},
                  "chips": {}, "skipped": [asdict(s) for s in skips], "notes": notes}
        for chip in tqdm(chips, desc="chips", unit="chip", leave=False, disable=None):
            record["chips"][chip.chip_id] = convert_chip(source, chip, destinations[chip.chip_id], staging, options,
                                                         stride, tally, log)
            record["files"].update({source.index.relative(p): p.stat().st_size for p in chip.files.values()})
            record["skipped"] += record["chips"][chip.chip_id].pop("skip", [])
        if sum(tally.patches.values()) == 0:
            raise DataError(f"{root}: no patch written ({'; '.join(tally.lines())})")
        check_training_splits(root, destinations, tally)
        record["splits"] = tally.as_dict()
        write_json(staging / "prepare.json", record)
        write_report(staging, str(options.out))
        commit(staging, options.out)
    except OSError as error:  # disk full, permissions: nothing reaches --out (OutputError is an OSError too)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OutputError):
            raise
        raise OutputError(f"--out {str(options.out)!r}: writing failed ({error}); --out is as it was") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for line in notes + tally.lines():
        log(line)
    log(f"wrote {options.out} (prepare.json, data_report.md, data_report.json, data_report.png)")
    return record


def check_training_splits(root: Path, destinations: dict[str, list[str]], tally: Tally) -> None:
    """A layout a train script cannot train on (no train split, or a fold whose train split got no patch) is
    an error, not an exit status 0 and a folder that fails later."""
    training = sorted({split for splits in destinations.values() for split in splits if split.split("/")[-1] == "train"})
    empty = [split for split in training if tally.patches[split] == 0]
    if not training or empty:
        what = f"{', '.join(empty)} got no patch" if empty else "no chip went to a train split"
        raise DataError(f"{root}: no training data written: {what} ({'; '.join(tally.lines())}); lower --val-share, "
                        f"use fewer --folds, or check why chips were skipped; --out is as it was")


def relative_name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path.resolve())


def convert_chip(source, chip, splits: list[str], root: Path, options: Options, stride: int, tally: Tally, log) -> dict:
    """Write one chip's patches to its splits, reading one strip of rows at a time; its entry in prepare.json.
    A chip that fails halfway (unreadable pixels, undeclared label values) is removed again and counted."""
    entry = {"splits": splits, "group": group_of(chip.chip_id, options.group_by), "release_split": chip.split,
             "height": chip.height, "width": chip.width, **chip.georef, "notes": chip.notes,
             "files": {role: source.index.relative(path) for role, path in chip.files.items()},
             "patches": {}, "dropped": {}}
    written, dropped = [], Counter()
    try:
        for i, rows in enumerate(strip_rows(chip.height, options.patch, stride)):
            data = source.read(chip, rows)
            for j, bands, label in strip_patches(data.bands, data.label, options.patch, stride, chip.width):
                patch_id = f"{chip.chip_id}_r{i}c{j}"
                share = valid_share(bands, label)
                if share == 0 or share < options.min_valid:
                    reason = "no valid pixel" if share == 0 else f"too little valid data (< {options.min_valid:g})"
                    entry["dropped"][patch_id] = f"{reason}: {share:.3f} valid"
                    dropped[reason] += 1
                    continue
                written += write_patch(root, splits, patch_id, bands, label)
                entry["patches"][patch_id] = {"row": i * stride, "col": j * stride, "valid": round(share, 4)}
    except DataError as error:
        for path in written:
            path.unlink(missing_ok=True)
        reason = "unexpected label values" if isinstance(error, LabelValueError) else "unreadable file"
        log(f"skipped: {error}", file=sys.stderr)
        for split in splits:
            tally.skipped[split][reason] += 1
        entry.update(patches={}, dropped={}, skip=[asdict(Skip(reason, str(error), split)) for split in splits])
        return entry
    for split in splits:
        tally.chips[split] += 1
        tally.patches[split] += len(entry["patches"])
        tally.skipped[split].update(dropped)
        tally.notes[split].update(chip.notes)
    return entry
