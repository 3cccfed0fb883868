"""CASE (Liu et al., ICCV 2023) re-implemented on otlabel: weakly-supervised temporal action localisation.

Sub-modules (import what you need; nothing is imported eagerly so that each part stays
usable on its own):

* :mod:`case.data` — data sets (CASE/BaSNet layout, W-TALC layout, synthetic THUMOS14-like);
* :mod:`case.config` — the YAML configuration mapped to dataclasses, with ``--set`` overrides;
* :mod:`case.model` — the two-stream model of the paper's Table 9;
* :mod:`case.losses` — MIL top-k video loss, GBCE attention loss, SCC and CCC losses, Eq. 14;
* :mod:`case.labeling` — every optimal-transport labelling call, through otlabel's public API;
* :mod:`case.engine` — training, checkpoints, resume, DDP, test-time inference;
* :mod:`case.postprocess`, :mod:`case.metrics`, :mod:`case.viz` — detections, mAP, plots.
"""
