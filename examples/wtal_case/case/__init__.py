"""CASE (Liu et al., ICCV 2023) re-implemented on otlabel: weakly-supervised temporal action localisation.

Sub-modules, one job each (import what you need; nothing is imported eagerly):

* :mod:`case.config` — the YAML configuration mapped to dataclasses, with ``--set`` overrides;
* :mod:`case.errors` — the errors that stop a run before it starts, and its warnings;
* :mod:`case.data` — data sets (CASE/BaSNet layout, W-TALC layout, synthetic THUMOS14-like);
* :mod:`case.model` — the two-stream model of the paper's Table 9;
* :mod:`case.losses` — MIL top-k video loss, GBCE attention loss, SCC and CCC losses, Eq. 14;
* :mod:`case.labeling` — every optimal-transport labelling call, through otlabel's public API;
* :mod:`case.distributed` — processes, devices and the collectives of a DDP step;
* :mod:`case.batching` — the data order, the held-out slice, batch loading;
* :mod:`case.atomic`, :mod:`case.checkpoint`, :mod:`case.runfolder` — atomic files,
  checkpoints, and the locked run folder with its resume checks;
* :mod:`case.trainer` — training: checks, run folder, the Eq. 14 step, the loop;
* :mod:`case.inference` — a trained model on videos: outputs and detections;
* :mod:`case.evaluation` — the one evaluation path of train.py and evaluate.py: P^A, P^T and P^M
  of a checkpoint from one forward pass per video;
* :mod:`case.scoring` — its scoring step, NumPy only (``evaluate.py --pred`` takes it too);
* :mod:`case.postprocess`, :mod:`case.metrics`, :mod:`case.viz` — detections, mAP, plots;
* :mod:`case.ablation` — the reproduction report (a package: grid, runner, statistics, report,
  figures).
"""
