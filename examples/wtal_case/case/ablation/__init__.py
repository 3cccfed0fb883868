r"""The reproduction report: CASE's ablations (paper Tables 4–7, Fig. 3) and a σ sweep, over seeds.

``examples/wtal_case/ablate.py`` is the command line; this package holds, one job a module,

* :mod:`case.ablation.grid` — the training configurations (:data:`VARIANTS`), the tables and
  their rows (:data:`TABLES`), and :func:`plan`, which restricts them;
* :mod:`case.ablation.runner` — every run trained or found (:func:`ensure_trained`), its
  test-time results read once (:func:`ensure_evaluated`), the whole grid (:func:`run_ablation`);
* :mod:`case.ablation.statistics` — rows summarised over seeds, orderings judged
  (:func:`collect_results`);
* :mod:`case.ablation.report` and :mod:`case.ablation.figures` — the report: its numbers
  collected first, then drawn, serialised (:func:`results_json`) and rendered
  (:func:`render_markdown`) by :func:`write_report`.

**Grid.** A *variant* is one training configuration: the base config (``configs/ablation.yaml``)
plus ``--set`` overrides. A *row* of a table is a variant evaluated with one test-time
foreground (P^A, P^T or P^M, :data:`FOREGROUND_LABELS`). Tables share runs: the full model
appears in every table, and Table 7 and the last two rows of Table 4 only read other foreground
modes of the same evaluation — every evaluation scores all three from one forward pass
(:mod:`case.scoring`) — so they train and evaluate nothing more.

**Protocol** (fixed before any result was seen, and printed in the report):

* every variant is trained once per seed (``train.seed``; the data set is the same for all),
  from scratch, for the same number of steps, and its *final* weights are evaluated (no model
  selection, no early stopping);
* evaluation: every snippet of every test video, the default post-processing, mAP by the
  ActivityNet protocol at tIoU 0.1:0.1:0.7 and their average;
* a cell is the mean ± sample standard deviation (ddof = 1) over seeds;
* an ordering the paper reports (``a < b``) is judged on the average mAP: with the
  difference of means d = mean(b) − mean(a) and its standard error
  se = √(s_a²/n_a + s_b²/n_b), it *agrees* when d > 2·se, *disagrees* when d < −2·se, and is
  *unresolved* (within seed noise) otherwise;
* H(P̄^S) (Table 5) is the entropy of the clustering softmax averaged over a batch, as
  logged during training, averaged over the last 10% of the steps.

**Caching.** Each run lives in ``<out>/runs/<variant>-seed<seed>/`` (a train.py run folder);
a finished run (``final.pt`` and ``metrics.json``) is reused, an interrupted one is resumed
from its latest checkpoint (bit-identical on the CPU), and a folder trained with another
configuration is refused. Test-time results are cached in ``ablation.json`` beside them.
A killed ablation therefore continues where it stopped when run again.
"""

from __future__ import annotations

from .grid import ENTROPY_TAIL, FOREGROUND_LABELS, TABLES, VARIANTS, AblationError, Row, Table, Variant, plan
from .report import render_markdown, results_json, write_report
from .runner import (
    RunRecord,
    ensure_evaluated,
    ensure_trained,
    run_ablation,
    run_config,
    run_finished,
    run_path,
)
from .statistics import (
    AblationResults,
    Ordering,
    RowResult,
    Summary,
    TableResult,
    collect_results,
    compare,
    summarize,
)

__all__ = [
    "AblationError",
    "Variant",
    "Row",
    "Table",
    "VARIANTS",
    "TABLES",
    "FOREGROUND_LABELS",
    "ENTROPY_TAIL",
    "plan",
    "RunRecord",
    "run_path",
    "run_config",
    "run_finished",
    "ensure_trained",
    "ensure_evaluated",
    "run_ablation",
    "Summary",
    "summarize",
    "compare",
    "RowResult",
    "Ordering",
    "TableResult",
    "AblationResults",
    "collect_results",
    "render_markdown",
    "results_json",
    "write_report",
]
