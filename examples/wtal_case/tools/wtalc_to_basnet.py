#!/usr/bin/env python
"""Convert features in the W-TALC layout to the CASE/BaSNet layout (e.g. ActivityNet v1.2 for anet12.yaml).

    python examples/wtal_case/tools/wtalc_to_basnet.py --src downloads/wtalc --name ActivityNet1.2 \\
        --train-subset training --test-subset validation --out data/ActivityNet1.2
    python examples/wtal_case/tools/wtalc_to_basnet.py --src downloads/wtalc --name Thumos14reduced \\
        --train-subset validation --test-subset test --out data/THUMOS14-wtalc

W-TALC ships one pickled feature file ``<name>-I3D-JOINTFeatures.npy`` (one (T, 2048) array per
video, RGB then flow) and an annotation folder ``<name>-Annotations/`` whose ``subset.npy`` names
each video's subset: THUMOS14 uses ``validation`` (training videos) and ``test``, ActivityNet
``training`` and ``validation`` (the evaluation videos). The ``wtalc`` data source reads the
THUMOS14 naming only; this tool writes any of them as

    <out>/gt.json                       {"database": {video: {"subset", "duration", "annotations"}}}
    <out>/split_train.txt, split_test.txt
    <out>/classes.txt                   classlist.npy, in its order (label index = position)
    <out>/features/{train,test}/{rgb,flow}/<video>.npy    float32 (T, 1024)

which ``data.source: basnet`` reads. Videos of other subsets are skipped. The output is written
to a temporary sibling folder and renamed into place, so a killed conversion leaves no half set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from case.data.annotations import activitynet_entry, load_pickled_npy, read_wtalc_annotations  # noqa: E402


def convert(src: Path, name: str, out: Path, train_subset: str, test_subset: str) -> dict[str, int]:
    """Write the CASE/BaSNet layout of W-TALC data set ``name`` under ``src`` into ``out``.

    Returns
    -------
    dict
        Videos written per split, ``{"train": n, "test": m}``.

    Raises
    ------
    FileNotFoundError
        A missing input file.
    ValueError
        Inconsistent inputs (arrays of different lengths, a feature that is not (T, 2048),
        a malformed segment, a label not in ``classlist.npy``), or ``out`` already exists.
    """
    if out.exists():
        raise ValueError(f"{out} already exists; remove it or choose another --out")
    ann = src / f"{name}-Annotations"
    classes, records = read_wtalc_annotations(ann, subsets=None)  # W-TALC's own subset names
    features = load_pickled_npy(src / f"{name}-I3D-JOINTFeatures.npy", "feature file")
    if len(features) != len(records):
        raise ValueError(f"{name}: {len(features)} features entries for {len(records)} videos")
    wanted = {train_subset: "train", test_subset: "test"}
    found = sorted({rec.subset for rec in records})
    if not set(wanted) <= set(found):
        raise ValueError(f"{ann / 'subset.npy'}: subsets {found}; --train-subset/--test-subset must be among them")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        database, splits = {}, {"train": [], "test": []}
        for rec, joint_features in zip(records, features):
            split = wanted.get(rec.subset)
            if split is None:
                continue
            joint = np.asarray(joint_features, dtype=np.float32)
            if joint.ndim != 2 or joint.shape[1] != 2048 or len(joint) == 0:
                raise ValueError(f"{name}: features of {rec.name!r} have shape {joint.shape}, expected (T, 2048)")
            for stream, part in (("rgb", joint[:, :1024]), ("flow", joint[:, 1024:])):
                folder = tmp / "features" / split / stream
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{rec.name}.npy", np.ascontiguousarray(part))
            database[rec.name] = activitynet_entry(split, rec.duration, rec.segments)
            splits[split].append(rec.name)
        (tmp / "gt.json").write_text(json.dumps({"database": database}))
        for split, videos in splits.items():
            (tmp / f"split_{split}.txt").write_text("".join(v + "\n" for v in videos))
        (tmp / "classes.txt").write_text("".join(c + "\n" for c in classes))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: len(videos) for split, videos in splits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="folder of <name>-I3D-JOINTFeatures.npy and <name>-Annotations/")
    parser.add_argument("--name", required=True, help="file prefix: Thumos14reduced, ActivityNet1.2, ...")
    parser.add_argument("--out", required=True, help="the CASE/BaSNet folder to create (data.root)")
    parser.add_argument("--train-subset", required=True, help="W-TALC subset that trains (THUMOS14: validation)")
    parser.add_argument("--test-subset", required=True, help="W-TALC subset that evaluates (ActivityNet: validation)")
    args = parser.parse_args(argv)
    if args.train_subset == args.test_subset:
        parser.error("--train-subset and --test-subset must differ")
    try:
        counts = convert(Path(args.src), args.name, Path(args.out), args.train_subset, args.test_subset)
    except (FileNotFoundError, ValueError) as err:
        print(f"wtalc_to_basnet.py: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['train']} training and {counts['test']} test videos (data.source: basnet)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
