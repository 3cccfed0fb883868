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

from case.data.annotations import activitynet_entry, decode, load_pickled_npy, parse_segment  # noqa: E402


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
        a malformed segment), or ``out`` already exists.
    """
    if out.exists():
        raise ValueError(f"{out} already exists; remove it or choose another --out")
    ann = src / f"{name}-Annotations"
    names = [decode(v) for v in np.ravel(load_pickled_npy(ann / "videoname.npy"))]
    subsets = [decode(s) for s in np.ravel(load_pickled_npy(ann / "subset.npy"))]
    durations = np.ravel(load_pickled_npy(ann / "duration.npy")).astype(np.float64)
    segments, labels = load_pickled_npy(ann / "segments.npy"), load_pickled_npy(ann / "labels.npy")
    classes = [decode(c) for c in np.ravel(load_pickled_npy(ann / "classlist.npy"))]
    features = load_pickled_npy(src / f"{name}-I3D-JOINTFeatures.npy", "feature file")
    for what, array in (("subset", subsets), ("duration", durations), ("segments", segments),
                        ("labels", labels), ("features", features)):  # fmt: skip
        if len(array) != len(names):
            raise ValueError(f"{name}: {len(array)} {what} entries for {len(names)} videos")
    wanted = {train_subset: "train", test_subset: "test"}
    found = sorted(set(subsets))
    if not set(wanted) <= set(found):
        raise ValueError(f"{ann / 'subset.npy'}: subsets {found}; --train-subset/--test-subset must be among them")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        database, splits = {}, {"train": [], "test": []}
        for i, video in enumerate(names):
            split = wanted.get(subsets[i])
            if split is None:
                continue
            joint = np.asarray(features[i], dtype=np.float32)
            if joint.ndim != 2 or joint.shape[1] != 2048 or len(joint) == 0:
                raise ValueError(f"{name}: features of {video!r} have shape {joint.shape}, expected (T, 2048)")
            for stream, part in (("rgb", joint[:, :1024]), ("flow", joint[:, 1024:])):
                folder = tmp / "features" / split / stream
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{video}.npy", np.ascontiguousarray(part))
            where = f"{ann} (video {video!r})"
            segs = [parse_segment(b, lab, where) for b, lab in zip(list(segments[i]), list(labels[i]), strict=True)]
            database[video] = activitynet_entry(split, float(durations[i]), segs)
            splits[split].append(video)
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
