"""Settings: ``params.yaml`` sections, ``--set section.key=value`` overrides, validation.

Every stage reads its own section (``train:`` for ``privtool train``) plus the shared
``data:`` section. Unknown sections or keys are errors that name the key and list the
valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from privtool.errors import PrivtoolError
from privtool.schema import (
    Rule,
    apply_overrides,
    build,
    check_field,
    field_type,
    invalid,
    section_of,
    seed_rule,
    settings,
    validate,
)

DEFAULT_SPLITS = {"train": 0.5, "test": 0.2, "shadow": 0.2, "public": 0.1}


_POS = Rule(ge=1)
_FRACTION = Rule(gt=0, lt=1)
_DEVICE = Rule(choices=("auto", "cpu", "cuda"))
_OPTIMIZER = Rule(choices=("sgd", "adam"))


@settings(
    "data",
    dataset=Rule(help="a dataset name (see `privtool data list`)"),
    image_size=_POS,
    split_seed=seed_rule("seed of the train/test/shadow/public split"),
    splits=Rule(each=Rule(gt=0, lt=1, allowed="a fraction in (0, 1)")),
)
@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and how it is split (split seed kept apart from the
    training seed so runs with different seeds share their splits)."""

    dataset: str = "mnist-5k"
    root: str | None = None
    image_size: int | None = None
    split_seed: int = 0
    splits: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLITS))

    def __post_init__(self) -> None:
        validate(self)
        splits = dict(self.splits)
        if "train" not in splits or "test" not in splits:
            raise invalid(
                "data.splits", splits, "a mapping with at least 'train' and 'test' fractions"
            )
        if sum(splits.values()) > 1 + 1e-9:
            raise invalid("data.splits", splits, "fractions summing to at most 1")


# privtool.mechanisms.vmf_modes.VMF_MODES' names (a test keeps them equal; no torch import here)
VMF_MODE_NAMES = ("alg2", "opacus-add-unit", "opacus-add-scaled", "opacus-add-sample")


@settings(
    "train",
    epochs=_POS,
    batch_size=_POS,
    optimizer=_OPTIMIZER,
    lr=Rule(gt=0),
    momentum=Rule(ge=0, lt=1),
    seed=seed_rule(),
    device=_DEVICE,
    epsilon=Rule(gt=0, allowed="a number > 0 (the whole-run privacy target) or null"),
    delta=_FRACTION,
    noise_multiplier=Rule(ge=0),
    max_grad_norm=Rule(gt=0),
    accountant=Rule(choices=("rdp", "prv")),
    grad_sample_mode=Rule(choices=("ghost", "hooks", "functorch")),
    kappa=Rule(ge=0, allowed="a number >= 0 (VMF concentration) or null"),
    epsilon_v=Rule(gt=0, allowed="a number > 0 (paper 1's per-update ε_V) or null"),
    partition=Rule(choices=("whole", "layer", "row")),
    eval_batch_size=_POS,
    k_sub=Rule(ge=1, allowed="an integer >= 1 (subclasses per class)"),
    unit_sample_rate=Rule(gt=0, le=1),
    unit_sampling=Rule(choices=("poisson", "fixed")),
    subclass_features=Rule(choices=("pixels", "embeddings")),
    checkpoint_every=Rule(ge=0, allowed="an integer >= 0 (0 keeps no per-epoch checkpoints)"),
    noise_seed=Rule(
        choices=("secret", "from-seed"),
        allowed="secret (noise drawn from the OS, for releases) or from-seed (reproducible)",
    ),
    vmf_mode=Rule(choices=VMF_MODE_NAMES),
    distributed=Rule(choices=("none", "ddp"), allowed="none or ddp (under torchrun)"),
    threads=Rule(
        ge=1, allowed="an integer >= 1 (torch intra-op threads) or null (torch's default)"
    ),
)
@dataclass(frozen=True)
class TrainConfig:
    """How ``privtool train`` trains: mechanism, model, optimiser and privacy knobs.

    Privacy quantities use Opacus' names. Exactly one of ``epsilon`` (a whole-run target that
    is solved for σ or κ) and the mechanism's own noise knob decides the noise.
    """

    mech: str = "gaussian"
    model: str = "lenet"
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.5
    momentum: float = 0.0
    seed: int = 0
    device: str = "auto"
    epsilon: float | None = None
    delta: float = 1e-5
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    grad_sample_mode: str = "hooks"  # fastest for the small CNNs here; ghost for wide layers
    kappa: float | None = None
    epsilon_v: float | None = 100000.0  # vmf fallback when neither epsilon nor kappa is set
    partition: str = "whole"
    vmf_mode: str = "alg2"  # vmf: Alg. 2 or a paper 1 §3.4 reading (mechanisms/vmf_modes.py)
    eval_batch_size: int = 1024
    k_sub: int = 1  # class/subclass: k-means subclasses per class
    unit_sample_rate: float = 0.2  # class/subclass: q, the probability a unit joins a step
    unit_sampling: str = "poisson"  # class/subclass: poisson (add/remove unit) | fixed (replace)
    subclass_features: str = "pixels"  # subclass: k-means on pixels | embeddings (model.embed)
    checkpoint_every: int = 1  # keep checkpoints/epoch-N.pt every N epochs (+ the last); 0: none
    noise_seed: str = "secret"  # secret: DP noise/sampling from os.urandom | from-seed: seed+1/+2
    distributed: str = "none"  # none | ddp: one training across torchrun processes (README)
    threads: int | None = None  # torch intra-op threads (null: torch's default, one per core)

    def __post_init__(self) -> None:
        validate(self)


PRETRAIN_METHODS = ("rotation",)


@settings(
    "pretrain",
    method=Rule(choices=PRETRAIN_METHODS),
    dataset=Rule(allowed="null (the private dataset) or a dataset name"),
    split=Rule(allowed="null, a split name of data.splits, or all"),
    epochs=_POS,
    batch_size=_POS,
    optimizer=_OPTIMIZER,
    lr=Rule(gt=0),
    holdout=_FRACTION,
)
@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pre-training of the model's feature layers on public data before DP
    training (paper 2 §4.2, after Gidaris et al. 2018: predict which of 4 rotations was
    applied). No labels are used and no private record is touched, so it costs no ε.

    ``dataset`` null means the private dataset itself, whose ``split`` (default ``public``,
    disjoint from the private ``train`` split) is the public source; for another dataset
    ``split`` defaults to ``all`` of it.
    """

    method: str | None = None  # null (no pre-training) | rotation  (--pretrain rotation)
    dataset: str | None = None  # null: data.dataset
    split: str | None = None  # null: public (same dataset) | all (another dataset)
    epochs: int = 15
    batch_size: int = 64  # images per step, each seen at all 4 rotations
    optimizer: str = "adam"
    lr: float = 0.001
    holdout: float = 0.1  # fraction of the public images kept aside to score it

    def __post_init__(self) -> None:
        validate(self)


@settings(
    "select.near_private",
    epsilon_pca=Rule(gt=0),
    delta_pca=_FRACTION,
    epsilon_support=Rule(gt=0, allowed="a number > 0, or null (the rest of select.epsilon_limit)"),
    private_k=Rule(ge=1, allowed="an integer >= 1 or null (every private point)"),
    public_k=Rule(ge=1, allowed="an integer >= 1 or null (half the pool)"),
    public_dims=Rule(ge=1, allowed="an integer >= 1 or null (DP-PCA on the raw embeddings)"),
)
@dataclass(frozen=True)
class NearPrivateConfig:
    """NearPrivate's privacy knobs (paper 2, Alg. 2): DP-PCA of the private embeddings by
    Analyze Gauss (Dwork et al. 2014) at (ε_dpPCA, δ_dpPCA), and Laplace-noised support counts
    at ε_support. ``epsilon_support`` null: with ``select.epsilon_limit``, whatever the limit
    leaves after the parent checkpoint and ε_dpPCA (paper 2 §5.2)."""

    epsilon_pca: float = 0.5
    delta_pca: float = 1e-5
    epsilon_support: float | None = 0.5
    private_k: int | None = None  # uncertain private points that vote; null: every one
    public_k: int | None = None  # uncertain public candidates; null: max(select.k, pool/2)
    public_dims: int | None = 32  # public-PCA dimensions DP-PCA works in; null: the raw width

    def __post_init__(self) -> None:
        validate(self)


@settings(
    "select.pollution",
    dataset=Rule(allowed="null (no pollution) or a dataset name"),
    fraction=Rule(gt=0, lt=1, allowed="a fraction in (0, 1) of the mixed pool"),
)
@dataclass(frozen=True)
class PollutionConfig:
    """Out-of-distribution images mixed into the public pool (paper 2 §4.3): ``fraction`` of
    the mixed pool comes from ``dataset`` (converted to the private images' shape)."""

    dataset: str | None = None
    fraction: float = 0.2

    def __post_init__(self) -> None:
        validate(self)


@settings(
    "select.finetune",
    epochs=Rule(ge=0),
    batch_size=_POS,
    optimizer=_OPTIMIZER,
    lr=Rule(gt=0),
    momentum=Rule(ge=0, lt=1),
)
@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning the DP checkpoint on the labelled public points: plain (non-private)
    training, since public data needs no noise (paper 2 §3)."""

    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0

    def __post_init__(self) -> None:
        validate(self)


@settings("select.curve", seeds=_POS)
@dataclass(frozen=True)
class CurveConfig:
    """The accuracy-versus-labels sweep (``privtool select --strategy all``): every strategy
    at every budget, ``seeds`` seeds each, from the same parent."""

    strategies: Any = "all"  # all | a list of strategy names
    budgets: Any = (10, 20, 50)  # N_labeled values
    seeds: int = 5  # paper 2 averages 5 runs

    def __post_init__(self) -> None:
        validate(self)
        s = self.strategies
        if isinstance(s, str) and s != "all":
            s = [t.strip() for t in s.split(",") if t.strip()]
        if not (
            s == "all"
            or (
                isinstance(s, (list, tuple))
                and len(s) > 0
                and all(isinstance(t, str) and t for t in s)
            )
        ):
            raise invalid(
                "select.curve.strategies", self.strategies, "all or a list of strategy names"
            )
        object.__setattr__(self, "strategies", s if s == "all" else list(s))
        b = self.budgets
        if isinstance(b, str):
            try:
                b = [int(t) for t in b.split(",") if t.strip()]
            except ValueError:
                pass
        if isinstance(b, int) and not isinstance(b, bool):
            b = [b]
        if not (
            isinstance(b, (list, tuple))
            and len(b) > 0
            and all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in b)
        ):
            raise invalid(
                "select.curve.budgets", self.budgets, "a list of integers >= 1, e.g. [10, 20, 50]"
            )
        object.__setattr__(self, "budgets", sorted(set(int(t) for t in b)))


@settings(
    "select",
    strategy=Rule(allowed="a strategy name (privtool select --help lists them)"),
    n_labeled=_POS,
    seed=seed_rule(),
    device=_DEVICE,
    public_dataset=Rule(allowed="null (the private dataset's public split) or a dataset name"),
    public_split=Rule(allowed="null, a split name, or all"),
    uncertainty=Rule(choices=("entropy", "margin")),
    k=Rule(ge=1, allowed="an integer >= 1 or null (4 × n_labeled)"),
    n_components=_POS,
    n_each=_POS,
    epsilon_limit=Rule(gt=0),
)
@dataclass(frozen=True)
class SelectConfig:
    """How ``privtool select`` picks public points and fine-tunes (paper 2, Alg. 1 and 2).

    The public pool is ``public_dataset`` (null: the private dataset itself) restricted to
    ``public_split`` (null: ``public`` of the same dataset, disjoint from ``train``; ``all`` of
    another one). ``k`` uncertain candidates (by ``uncertainty``) are clustered / voted on in
    the first ``n_components`` principal components of the penultimate-layer embeddings.
    """

    strategy: str = "diverse-public"
    n_labeled: int = 50
    seed: int = 0
    device: str = "auto"
    public_dataset: str | None = None
    public_split: str | None = None
    uncertainty: str = "entropy"  # entropy | margin: SelectUncertain's score
    k: int | None = None  # uncertain candidates (k > N_labeled); null: 4 × n_labeled
    n_components: int = 16  # p, principal components of the embeddings
    n_each: int = 1  # diverse-public: points per cluster (N_cluster = N / n_each)
    epsilon_limit: float | None = None
    near_private: NearPrivateConfig = field(default_factory=NearPrivateConfig)
    pollution: PollutionConfig = field(default_factory=PollutionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)

    def __post_init__(self) -> None:
        validate(self)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "pretrain": PretrainConfig,
    "select": SelectConfig,
}
# Sections owned by stages that later issues add, and `sweep` (the grid dvc.yaml expands);
# accepted so a full params.yaml loads.
OTHER_SECTIONS = ("attack", "calibrate", "report", "sweep", "audit")


def defaults() -> dict[str, dict[str, Any]]:
    """The default params of every section, as plain dicts."""
    return {name: asdict(cls()) for name, cls in SECTIONS.items()}


#: Typed sections that later stages build themselves (``module:Class``), resolved lazily so
#: loading params stays cheap; used to check values an override replaces.
LATER_SECTIONS = {
    "attack": "privtool.attacks.base:AttackConfig",
    "calibrate": "privtool.calibrate.settings:CalibrateConfig",
    "report": "privtool.report:ReportConfig",
    "audit": "privtool.audit.run:AuditConfig",
}


def _section_class(section: str) -> type | None:
    if section in SECTIONS:
        return SECTIONS[section]
    if section in LATER_SECTIONS:
        import importlib

        module, _, name = LATER_SECTIONS[section].partition(":")
        return getattr(importlib.import_module(module), name)
    return None


def check_key(dotted: str, value: Any) -> None:
    """Validate one ``section.key[.key]`` value on its own, as its settings class would
    (through :mod:`privtool.schema`); untyped places (``sweep``, free mappings) pass."""
    section, *path = dotted.split(".")
    cls = _section_class(section)
    while cls is not None and path:
        name = path.pop(0)
        names = {f.name for f in fields(cls)}
        if name not in names:
            if section == "attack" and not path:
                return
            if section == "attack":  # attack.<name>.key: that attack's own options
                import privtool.attacks  # noqa: F401  (registers every attack)
                from privtool.attacks.base import ATTACKS

                if name not in ATTACKS:
                    return
                cls = ATTACKS.get(name).Options
                continue
            valid = ", ".join(sorted(names))
            raise PrivtoolError(
                f"unknown params key {dotted}; valid keys in '{section_of(cls)}': {valid}"
            )
        tp = field_type(cls, name)
        if path and is_dataclass(tp):
            cls = tp
            continue
        if path:  # a key inside a mapping field (data.splits.train)
            check_field(cls, name, {path[0]: value})
        else:
            check_field(cls, name, value)
        return


@dataclass(frozen=True)
class Params:
    """All params after defaults, file and overrides; ``raw`` keeps sections of later stages."""

    data: DataConfig
    train: TrainConfig
    raw: Mapping[str, Any]
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)

    def as_dict(self) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in self.raw.items()}
        out["data"] = asdict(self.data)
        out["data"]["splits"] = dict(self.data.splits)
        out["train"] = asdict(self.train)
        out["pretrain"] = asdict(self.pretrain)
        out["select"] = asdict(self.select)
        return out


def load_params(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | None = None,
    *,
    required: bool = False,
) -> Params:
    """Defaults <- params file (if present) <- overrides, validated.

    ``required`` is True when the user named the file explicitly: then a missing file is an
    error rather than "use the defaults".
    """
    file_params: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_file():
            try:
                loaded = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" (line {mark.line + 1})" if mark else ""
                raise PrivtoolError(
                    f"{p} is not valid YAML{where}; fix the file or pass another with --params"
                ) from None
            if not isinstance(loaded, dict):
                raise PrivtoolError(f"{p} must be a mapping of sections (data:, train:, ...)")
            file_params = loaded
        elif required:
            raise PrivtoolError(
                f"params file {p} not found; pass an existing file with "
                f"--params or omit it to use the defaults"
            )
    merged = defaults()
    for section, values in file_params.items():
        if section not in SECTIONS and section not in OTHER_SECTIONS:
            valid = ", ".join(list(SECTIONS) + list(OTHER_SECTIONS))
            raise PrivtoolError(f"unknown params section {section!r}; valid sections: {valid}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise PrivtoolError(f"params section {section!r} must be a mapping of key: value")
        merged.setdefault(section, {}).update(values)

    def replaced(dotted: str, old: Any) -> None:
        check_key(dotted, old)  # the overridden value must be valid too

    merged = apply_overrides(merged, overrides or [], replaced)
    for section in merged:
        if section not in SECTIONS and section not in OTHER_SECTIONS:
            valid = ", ".join(list(SECTIONS) + list(OTHER_SECTIONS))
            raise PrivtoolError(f"unknown params section {section!r}; valid sections: {valid}")
    data = build(DataConfig, merged["data"], "data")
    train = build(TrainConfig, merged["train"], "train")
    pretrain = build(PretrainConfig, merged["pretrain"], "pretrain")
    select = build(SelectConfig, merged["select"], "select")
    return Params(data=data, train=train, raw=merged, pretrain=pretrain, select=select)
