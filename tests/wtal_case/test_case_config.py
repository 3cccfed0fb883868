"""The YAML <-> dataclass configuration: shipped configs, overrides, type checks, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from case.config import CONFIG_DIR, Config, ConfigError, dump_config, load_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_the_shipped_configs_are_all_there() -> None:
    assert {p.name for p in SHIPPED} >= {"synthetic.yaml", "smoke.yaml", "thumos14.yaml", "anet12.yaml", "anet13.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    (tmp_path / "resolved.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_paper_settings() -> None:
    thumos = load_config(CONFIG_DIR / "thumos14.yaml")
    assert (thumos.data.num_segments, thumos.loss.topk_divisor, thumos.model.num_clusters) == (750, 8, 16)
    assert (thumos.train.batch_size, thumos.optim.lr, thumos.optim.weight_decay) == (16, 1e-4, 5e-4)
    assert 3500 <= thumos.train.steps <= 3700 and thumos.model.num_classes == 20
    assert (thumos.loss.lambda_scc, thumos.loss.lambda_ccc, thumos.loss.gbce_q) == (1.0, 0.3, 0.7)
    assert thumos.labeling.scc.epsilon == thumos.labeling.ccc.epsilon == 0.5  # the paper's eps = 20 on cos x 10
    assert thumos.train.select == "final"  # never the test set
    for name, classes in (("anet12.yaml", 100), ("anet13.yaml", 200)):
        anet = load_config(CONFIG_DIR / name)
        assert (anet.data.num_segments, anet.loss.topk_divisor, anet.model.num_clusters) == (50, 2, 64)
        assert anet.model.num_classes == classes
        assert anet.eval.tiou[0] == 0.5 and anet.eval.tiou[-1] == 0.95 and len(anet.eval.tiou) == 10


def test_overrides_are_typed() -> None:
    cfg = load_config(
        None, ["train.steps=12", "labeling.scc.sigma=1", "optim.betas=[0.5, 0.9]", "postprocess.cas_weight=null"]
    )
    assert cfg.train.steps == 12 and cfg.labeling.scc.sigma == 1.0 and isinstance(cfg.labeling.scc.sigma, float)
    assert cfg.optim.betas == (0.5, 0.9) and cfg.postprocess.cas_weight is None
    cfg = load_config(None, ["labeling.scc.method=argmax", "labeling.ccc.marginal=uniform", "data.synthetic.scale=0.5"])
    assert (cfg.labeling.scc.method, cfg.labeling.ccc.marginal, cfg.data.synthetic.scale) == ("argmax", "uniform", 0.5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown key 'train.stepz'"),
        ("trian.steps=3", "unknown key 'trian'"),
        ("train.steps=many", "train.steps must be an integer"),
        ("train.steps=1.5", "train.steps must be an integer"),
        ("train.progress=3", "train.progress must be true or false"),
        ("labeling.scc.method=kmeans", "labeling.scc.method must be one of 'ot', 'argmax'"),
        ("labeling.scc.sigma=-1", "labeling.scc.sigma must be a finite number > 0"),
        ("optim.betas=[0.9]", "optim.betas must be a list of 2 items"),
        ("train.steps", "--set expects key=value"),
        ("train.steps.x=1", "'train.steps' is a value, not a section"),
        ("data.source=youtube", "data.source must be one of"),
        ("labeling.scc.enabled=false", "labeling.ccc.enabled needs labeling.scc.enabled"),
        ("labeling.ccc.marginal=prior", "labeling.ccc.marginal must be one of 'estimated', 'uniform'"),
        ("postprocess.nms=greedy", "postprocess.nms must be one of 'hard', 'soft', 'official'"),
        ("postprocess.scale=2.5", "postprocess.scale must be an integer"),
        ("data.synthetic.dtype=int8", "data.synthetic.dtype must be one of 'float16', 'float32'"),
        # each a value that used to be accepted and crash or mislead later
        ("postprocess.nms_iou=2", "postprocess.nms_iou must lie in [0, 1], got 2.0"),
        ("eval.split=validation", "eval.split must be one of 'test', 'train', got 'validation'"),
        ("train.seed=-1", "train.seed must be an integer in [0, 2**32 - 1], got -1"),
        (f"train.seed={2**70}", "train.seed must be an integer in [0, 2**32 - 1]"),
        ("train.device=gpu", "train.device must be 'cpu', 'cuda' or 'cuda:<index>'"),
        ("train.precision=float16", "train.precision must be one of 'float32', 'bfloat16', got 'float16'"),
        ("train.precision=bf16", "train.precision must be one of 'float32', 'bfloat16', got 'bf16'"),
        ("train.compile=1", "train.compile must be true or false, got 1"),
        ("train.compile=max-autotune", "train.compile must be true or false, got 'max-autotune'"),
        ("optim.fused=2", "optim.fused must be true or false, got 2"),
        ("optim.lr=1e-4x", "optim.lr must be a number, got '1e-4x'"),
        # absurd numbers, each a traceback once the run folder existed (or before it)
        ("optim.lr=1" + "0" * 400, "optim.lr must be a number within the float range, got an integer of 401 digits"),
        ("optim.lr=" + "9" * 5000, "an integer of more than 4300 digits"),
        (f"train.steps={2**70}", "train.steps must be an integer within ±2**63, got an integer of 22 digits"),
        (f"data.num_segments={2**70}", "data.num_segments must be an integer within ±2**63"),
        (f"train.threads={10**20}", "train.threads must be <= 1024, got 100000000000000000000"),
        (f"data.synthetic.seed={2**70}", "data.synthetic.seed must be an integer within ±2**63"),
        ("train.threads=5000", "train.threads must be <= 1024, got 5000"),
        ("train.num_workers=100000", "train.num_workers must be <= 1024, got 100000"),
        # read only at the end of a run: 2400000 for 24 asked for hundreds of GB after all the training
        ("postprocess.scale=2400000", "postprocess.scale must lie in [1, 1000], got 2400000"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


@pytest.mark.parametrize("written", ["1e-4", "1E-4", "1e+1", "+2.5e-3", ".5", "5."])  # optim.lr <= 10
def test_every_float_a_user_writes_is_a_float(written: str, tmp_path: Path) -> None:
    """YAML 1.1 reads 1e-4 (no dot) as a string: the loader must still take it where a number goes."""
    assert load_config(None, [f"optim.lr={written}"]).optim.lr == float(written)
    config = tmp_path / "lr.yaml"
    config.write_text(
        f"optim:\n  lr: {written}\n  betas: [9e-1, 0.99]\n"
        f"postprocess:\n  cas_weight: 5e-2\n  act_thresholds: [-{written.lstrip('+')}, 1e0]\n"
    )
    cfg = load_config(config)
    assert cfg.optim.lr == float(written) and cfg.optim.betas == (0.9, 0.99)
    assert cfg.postprocess.cas_weight == 0.05 and cfg.postprocess.act_thresholds == (-abs(float(written)), 1.0)
    (tmp_path / "resolved.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "resolved.yaml") == cfg
    with pytest.raises(ConfigError, match="train.steps must be an integer, got '1e3'"):
        load_config(None, ["train.steps=1e3"])  # an integer is written as one


def test_the_dead_optimiser_name_is_gone() -> None:
    with pytest.raises(ConfigError, match="unknown key 'optim.name'"):
        load_config(None, ["optim.name=adam"])
    with pytest.raises(ConfigError, match="unknown key 'postprocess.feature_fps'"):
        load_config(None, ["postprocess.feature_fps=30"])  # snippet timing: case.data.constants


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# réglages\ntrain:\n  steps: 3\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: not UTF-8 text"):
        load_config(latin1)
    with pytest.raises(ConfigError, match="cannot read config file .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: the top level must be a mapping"):
        load_config(bad)
    bad.write_text("model:\n  num_clusterz: 4\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown key 'model.num_clusterz'; valid keys of model: hidden_dim"
    ):
        load_config(bad)
    bad.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: train must be a mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n\tsteps: 3\n", "found character '\\t' that cannot start any token (line 2, column 1)"),
        ("train: [1, 2\n", "expected ',' or ']', but got '<stream end>' (line 2, column 1)"),
        ("train: !!python/object:os.system {}\n", "could not determine a constructor for the tag"),
        # PyYAML lets the later of two equal keys win silently: the value the user edits may not be the one used
        ("optim:\n  lr: 0.1\ntrain:\n  steps: 3\n  steps: 4\n", "key 'steps' is written twice in one mapping (line 5"),
        ("optim: {lr: 0.1, lr: 0.2}\n", "key 'lr' is written twice in one mapping (line 1"),
    ],
    ids=["tab", "unclosed", "python-tag", "repeated-key", "repeated-flow-key"],
)
def test_yaml_mistakes_are_one_line_naming_the_place(text: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "\n" not in str(caught.value)  # PyYAML's own message runs over four lines with a caret
    assert str(caught.value).startswith(f"{config}: not valid YAML: ") and message in str(caught.value)
    with pytest.raises(ConfigError) as caught:  # the same in an override
        load_config(None, ["optim.betas=[0.5, 0.9"])
    assert "\n" not in str(caught.value) and "(line 1, column 10)" in str(caught.value)


def test_merge_keys_may_still_be_overridden() -> None:
    """YAML's '<<' merge keys are not repeated keys: the mapping's own key overrides the merged one."""
    from case.config import parse_yaml

    assert parse_yaml("a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  x: 3\n")["b"] == {"x": 3, "y": 2}


def test_train_py_reports_config_errors_with_exit_status_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "wtal_case" / "train.py"),
            "--set",
            "train.stepz=3",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},  # as tests/conftest.py
    )
    assert result.returncode == 2
    assert "unknown key 'train.stepz'" in result.stderr and "synthetic.yaml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_default_run_folder_never_reuses_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "examples" / "wtal_case"))
    from train import default_run_folder

    from case.errors import RunFolderInUse
    from case.runfolder import RunFolder, RunLock

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    base, numbered = default_run_folder("synthetic", 0, resume=False)
    assert base == Path("runs/synthetic-seed0") and numbered
    assert default_run_folder("synthetic", 0, resume=True) == (base, False)  # --resume: the unnumbered run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert default_run_folder("synthetic", 0, resume=False) == (base, False)  # DDP ranks must agree

    def new_run() -> Path:
        with RunFolder.open_new(base, Config()) as folder:
            return folder.paths.root

    (tmp_path / base).mkdir(parents=True)
    assert new_run() == base  # empty: reused
    (tmp_path / base / "log.jsonl").write_text("")
    assert new_run() == Path("runs/synthetic-seed0-2")
    (tmp_path / base / "log.jsonl").unlink()
    # another run locks the free name between our look and our lock: the next name, not "in use"
    acquire = RunLock.acquire

    def taken_first(lock: RunLock) -> None:
        if lock.path.parent == base:
            raise RunFolderInUse(f"run folder {base} is in use")
        acquire(lock)

    monkeypatch.setattr(RunLock, "acquire", taken_first)
    assert new_run() == Path("runs/synthetic-seed0-2")


def _fields(cls: type, prefix: str = "") -> list[tuple[str, object, type]]:
    """(dotted key, annotation, owning class) of every field of the configuration tree."""
    import dataclasses
    import typing

    found = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            found += _fields(hint, key + ".")
        else:
            found.append((key, hint, cls))
    return found


def test_one_validation_convention_for_every_section() -> None:
    """Choices are Literal annotations the loader checks, naming the full key; no section has its own
    validate() or a second error class (DataConfig had both, PostprocessConfig checked plain strings)."""
    import typing

    fields = _fields(Config)
    sections = {cls for _, _, cls in fields}
    assert not [cls.__name__ for cls in sections if hasattr(cls, "validate")]
    choices = [(key, hint) for key, hint, _ in fields if typing.get_origin(hint) is typing.Literal]
    assert {key for key, _ in choices} >= {
        "data.source", "data.synthetic.dtype", "eval.split", "eval.sampling", "labeling.scc.method",
        "postprocess.foreground_mode", "postprocess.nms", "postprocess.time_mapping", "train.precision",
    }  # fmt: skip
    for key, hint in choices:
        allowed = ", ".join(repr(a) for a in typing.get_args(hint))
        with pytest.raises(ConfigError, match=re.escape(f"defaults: {key} must be one of {allowed}, got 'bogus'")):
            load_config(None, [f"{key}=bogus"])


def test_no_float_setting_takes_nan_or_an_infinity() -> None:
    """An infinite weight decay, cosine temperature or CCC temperature used to be accepted (each
    check was `> 0` or `>= 0`, which inf passes) and turned the first step's loss into NaN."""
    floats = [(key, hint) for key, hint, _ in _fields(Config) if "float" in str(hint)]
    assert len(floats) > 20
    for key, hint in floats:
        for value in (".nan", ".inf", "-.inf"):
            written = f"[{value}, 0.5]" if "tuple" in str(hint) or "list" in str(hint) else value
            with pytest.raises(ConfigError, match=re.escape(key)):
                load_config(None, [f"{key}={written}"])


# --------------------------------------------------------------------------- issue 21 (part)


@pytest.mark.parametrize("written", ["5", "null", "[1, 2]"])
def test_a_section_given_as_a_value_is_an_error_even_with_an_override(written: str, tmp_path: Path) -> None:
    """C-new-4: `train: 5` was a clean error alone, but with `--set train.progress=false` the override
    replaced the section by {} and a 3,600-step default run started."""
    config = tmp_path / "scalar.yaml"
    config.write_text(f"train: {written}\n")
    for overrides in ([], ["train.progress=false"], ["train.steps=3", "optim.lr=0.1"]):
        with pytest.raises(ConfigError, match=re.escape(f"{config}: train must be a mapping of TrainConfig fields")):
            load_config(config, overrides)
    config.write_text(f"labeling:\n  scc: {written}\n")  # a nested section alike
    with pytest.raises(ConfigError, match=re.escape(f"{config}: labeling.scc must be a mapping of SCCConfig")):
        load_config(config, ["labeling.scc.sigma=0.2"])


@pytest.mark.parametrize("lr", ["1e38", "1e20", "11", "0", "-1e-4"])
def test_the_learning_rate_is_bounded(lr: str) -> None:
    """C-new-8: optim.lr=1e38 was a traceback in Adam's step (its step size overflows a float) and
    1e20 otlabel's "fg_scores contains NaN" after the first step; Adam's rate lies in (0, 10]."""
    message = f"defaults: optim.lr must lie in (0, 10] (the paper uses 1e-4), got {float(lr):g}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f"optim.lr={lr}"])
    for fine in ("10", "1e-4", "1e-12"):
        assert load_config(None, [f"optim.lr={fine}"]).optim.lr == float(fine)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.seed=" + "1" * 400, "train.seed must be an integer in [0, 2**32 - 1], got an integer of 400 digits"),
        ("train.seed=-" + "1" * 400, "train.seed must be an integer in [0, 2**32 - 1], got an integer of 400 digits"),
        ("train.device=" + "1" * 400, "train.device must be a string, got an integer of 400 digits"),
        ("eval.ambiguous=" + "1" * 400, "eval.ambiguous must be str or null, got an integer of 400 digits"),
        ("train.progress=" + "1" * 400, "train.progress must be true or false, got an integer of 400 digits"),
        ("train.device=cuda" + "x" * 400, "train.device must be 'cpu', 'cuda' or 'cuda:<index>', got"),
        ("1" * 400 + "=3", "(400 characters)"),
    ],
    ids=["seed", "negative-seed", "string", "optional", "bool", "long-text", "key"],
)
def test_a_value_of_hundreds_of_digits_is_not_printed_whole(override: str, message: str) -> None:
    """C-new-13: a 400-digit number in a config value was printed whole, 400 digits in a one-line error."""
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_config(None, [override])
    assert not re.search(r"\d{61}|x{61}", str(caught.value)), str(caught.value)
