"""Settings: ``params.yaml`` sections, ``--set section.key=value`` overrides, validation.

Every stage reads its own section (``train:`` for ``privtool train``) plus the shared
``data:`` section. Unknown sections or keys are errors that name the key and list the
valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from privtool.errors import PrivtoolError

DEFAULT_SPLITS = {"train": 0.5, "test": 0.2, "shadow": 0.2, "public": 0.1}


def _check(cond: bool, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise PrivtoolError(f"{name}={value!r} is not allowed: {allowed}")


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
        _check(isinstance(self.dataset, str) and bool(self.dataset), "data.dataset",
               self.dataset, "a dataset name (see `privtool data list`)")
        _check(self.image_size is None or (isinstance(self.image_size, int) and self.image_size > 0),
               "data.image_size", self.image_size, "a positive integer or null")
        _check(isinstance(self.splits, Mapping) and "train" in self.splits and "test" in self.splits,
               "data.splits", self.splits, "a mapping with at least 'train' and 'test' fractions")
        for k, v in self.splits.items():
            _check(isinstance(v, (int, float)) and 0 < v < 1, f"data.splits.{k}", v,
                   "a fraction in (0, 1)")
        _check(sum(self.splits.values()) <= 1 + 1e-9, "data.splits", dict(self.splits),
               "fractions summing to at most 1")


# privtool.mechanisms.vmf_modes.VMF_MODES' names (a test keeps them equal; no torch import here)
VMF_MODE_NAMES = ("alg2", "opacus-add-unit", "opacus-add-scaled", "opacus-add-sample")


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
    k_sub: int = 1                   # class/subclass: k-means subclasses per class
    unit_sample_rate: float = 0.2    # class/subclass: q, the probability a unit joins a step
    unit_sampling: str = "poisson"   # class/subclass: poisson (add/remove unit) | fixed (replace)
    subclass_features: str = "pixels"  # subclass: k-means on pixels | embeddings (model.embed)
    checkpoint_every: int = 1        # keep checkpoints/epoch-N.pt every N epochs (+ the last); 0: none
    noise_seed: str = "secret"       # secret: DP noise/sampling from os.urandom | from-seed: seed+1/+2
    distributed: str = "none"        # none | ddp: one training across torchrun processes (README)

    def __post_init__(self) -> None:
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "train.epochs", self.epochs,
               "an integer >= 1")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "train.batch_size",
               self.batch_size, "an integer >= 1")
        _check(self.optimizer in ("sgd", "adam"), "train.optimizer", self.optimizer, "sgd or adam")
        _check(_num(self.lr) and self.lr > 0, "train.lr", self.lr, "a number > 0")
        _check(_num(self.momentum) and 0 <= self.momentum < 1, "train.momentum", self.momentum,
               "a number in [0, 1)")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", self.device,
               "auto, cpu or cuda")
        _check(self.epsilon is None or (_num(self.epsilon) and self.epsilon > 0), "train.epsilon",
               self.epsilon, "a number > 0 (the whole-run privacy target) or null")
        _check(_num(self.delta) and 0 < self.delta < 1, "train.delta", self.delta,
               "a number in (0, 1)")
        _check(_num(self.noise_multiplier) and self.noise_multiplier >= 0,
               "train.noise_multiplier", self.noise_multiplier, "a number >= 0")
        _check(_num(self.max_grad_norm) and self.max_grad_norm > 0, "train.max_grad_norm",
               self.max_grad_norm, "a number > 0")
        _check(self.accountant in ("rdp", "prv"), "train.accountant", self.accountant, "rdp or prv")
        _check(self.grad_sample_mode in ("ghost", "hooks", "functorch"), "train.grad_sample_mode",
               self.grad_sample_mode, "ghost, hooks or functorch")
        _check(self.kappa is None or (_num(self.kappa) and self.kappa >= 0), "train.kappa",
               self.kappa, "a number >= 0 (VMF concentration) or null")
        _check(self.epsilon_v is None or (_num(self.epsilon_v) and self.epsilon_v > 0),
               "train.epsilon_v", self.epsilon_v, "a number > 0 (paper 1's per-update ε_V) or null")
        _check(self.partition in ("whole", "layer", "row"), "train.partition", self.partition,
               "whole, layer or row")
        _check(self.vmf_mode in VMF_MODE_NAMES, "train.vmf_mode", self.vmf_mode,
               " | ".join(VMF_MODE_NAMES))
        _check(isinstance(self.eval_batch_size, int) and self.eval_batch_size >= 1,
               "train.eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _check(isinstance(self.k_sub, int) and self.k_sub >= 1, "train.k_sub", self.k_sub,
               "an integer >= 1 (subclasses per class)")
        _check(_num(self.unit_sample_rate) and 0 < self.unit_sample_rate <= 1,
               "train.unit_sample_rate", self.unit_sample_rate, "a number in (0, 1]")
        _check(self.unit_sampling in ("poisson", "fixed"), "train.unit_sampling",
               self.unit_sampling, "poisson or fixed")
        _check(self.subclass_features in ("pixels", "embeddings"), "train.subclass_features",
               self.subclass_features, "pixels or embeddings")
        _check(isinstance(self.checkpoint_every, int) and not isinstance(self.checkpoint_every, bool)
               and self.checkpoint_every >= 0, "train.checkpoint_every", self.checkpoint_every,
               "an integer >= 0 (0 keeps no per-epoch checkpoints)")
        _check(self.noise_seed in ("secret", "from-seed"), "train.noise_seed", self.noise_seed,
               "secret (noise drawn from the OS, for releases) or from-seed (reproducible)")
        _check(self.distributed in ("none", "ddp"), "train.distributed", self.distributed,
               "none or ddp (under torchrun)")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


PRETRAIN_METHODS = ("rotation",)


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pre-training of the model's feature layers on public data before DP
    training (paper 2 §4.2, after Gidaris et al. 2018: predict which of 4 rotations was
    applied). No labels are used and no private record is touched, so it costs no ε.

    ``dataset`` null means the private dataset itself, whose ``split`` (default ``public``,
    disjoint from the private ``train`` split) is the public source; for another dataset
    ``split`` defaults to ``all`` of it.
    """

    method: str | None = None        # null (no pre-training) | rotation  (--pretrain rotation)
    dataset: str | None = None       # null: data.dataset
    split: str | None = None         # null: public (same dataset) | all (another dataset)
    epochs: int = 15
    batch_size: int = 64             # images per step, each seen at all 4 rotations
    optimizer: str = "adam"
    lr: float = 0.001
    holdout: float = 0.1             # fraction of the public images kept aside to score it

    def __post_init__(self) -> None:
        _check(self.method is None or self.method in PRETRAIN_METHODS, "pretrain.method",
               self.method, f"null or one of {', '.join(PRETRAIN_METHODS)}")
        _check(self.dataset is None or (isinstance(self.dataset, str) and bool(self.dataset)),
               "pretrain.dataset", self.dataset, "null (the private dataset) or a dataset name")
        _check(self.split is None or (isinstance(self.split, str) and bool(self.split)),
               "pretrain.split", self.split, "null, a split name of data.splits, or all")
        _check(isinstance(self.epochs, int) and self.epochs >= 1, "pretrain.epochs", self.epochs,
               "an integer >= 1")
        _check(isinstance(self.batch_size, int) and self.batch_size >= 1, "pretrain.batch_size",
               self.batch_size, "an integer >= 1")
        _check(self.optimizer in ("sgd", "adam"), "pretrain.optimizer", self.optimizer,
               "sgd or adam")
        _check(_num(self.lr) and self.lr > 0, "pretrain.lr", self.lr, "a number > 0")
        _check(_num(self.holdout) and 0 < self.holdout < 1, "pretrain.holdout", self.holdout,
               "a fraction in (0, 1)")


def _sub(cls: type, name: str, value: Any) -> Any:
    """A nested settings group (``select.finetune: {...}``) -> its frozen dataclass; unknown
    keys name the key and the valid ones, missing keys take their defaults."""
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    if not isinstance(value, Mapping):
        raise PrivtoolError(f"{name}={value!r} is not allowed: a mapping of key: value")
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise PrivtoolError(f"unknown params key {name}.{unknown[0]}; valid keys in '{name}': "
                            f"{', '.join(valid)}")
    return cls(**{k: _numeric(f, value[k]) for f in fields(cls) for k in [f.name] if k in value})


def _numeric(f: Any, v: Any) -> Any:
    """YAML 1.1 reads 1e-5 as a string: accept numeric strings for number fields."""
    if isinstance(v, str) and ("float" in str(f.type) or "int" in str(f.type)):
        try:
            return int(v) if "int" in str(f.type) and v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    if isinstance(v, float) and "int" in str(f.type) and "float" not in str(f.type) and v.is_integer():
        return int(v)
    return v


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class NearPrivateConfig:
    """NearPrivate's privacy knobs (paper 2, Alg. 2): DP-PCA of the private embeddings by
    Analyze Gauss (Dwork et al. 2014) at (ε_dpPCA, δ_dpPCA), and Laplace-noised support counts
    at ε_support. ``epsilon_support`` null: with ``select.epsilon_limit``, whatever the limit
    leaves after the parent checkpoint and ε_dpPCA (paper 2 §5.2)."""

    epsilon_pca: float = 0.5
    delta_pca: float = 1e-5
    epsilon_support: float | None = 0.5
    private_k: int | None = None     # uncertain private points that vote; null: every one
    public_k: int | None = None      # uncertain public candidates; null: max(select.k, pool/2)
    public_dims: int | None = 32     # public-PCA dimensions DP-PCA works in; null: the raw width

    def __post_init__(self) -> None:
        n = "select.near_private"
        _check(_num(self.epsilon_pca) and self.epsilon_pca > 0, f"{n}.epsilon_pca",
               self.epsilon_pca, "a number > 0")
        _check(_num(self.delta_pca) and 0 < self.delta_pca < 1, f"{n}.delta_pca",
               self.delta_pca, "a number in (0, 1)")
        _check(self.epsilon_support is None or (_num(self.epsilon_support)
                                                and self.epsilon_support > 0),
               f"{n}.epsilon_support", self.epsilon_support,
               "a number > 0, or null (the rest of select.epsilon_limit)")
        _check(self.private_k is None or (_count(self.private_k) and self.private_k >= 1),
               f"{n}.private_k", self.private_k, "an integer >= 1 or null (every private point)")
        _check(self.public_k is None or (_count(self.public_k) and self.public_k >= 1),
               f"{n}.public_k", self.public_k, "an integer >= 1 or null (half the pool)")
        _check(self.public_dims is None or (_count(self.public_dims) and self.public_dims >= 1),
               f"{n}.public_dims", self.public_dims,
               "an integer >= 1 or null (DP-PCA on the raw embeddings)")


@dataclass(frozen=True)
class PollutionConfig:
    """Out-of-distribution images mixed into the public pool (paper 2 §4.3): ``fraction`` of
    the mixed pool comes from ``dataset`` (converted to the private images' shape)."""

    dataset: str | None = None
    fraction: float = 0.2

    def __post_init__(self) -> None:
        _check(self.dataset is None or (isinstance(self.dataset, str) and bool(self.dataset)),
               "select.pollution.dataset", self.dataset, "null (no pollution) or a dataset name")
        _check(_num(self.fraction) and 0 < self.fraction < 1, "select.pollution.fraction",
               self.fraction, "a fraction in (0, 1) of the mixed pool")


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
        n = "select.finetune"
        _check(_count(self.epochs) and self.epochs >= 0, f"{n}.epochs", self.epochs,
               "an integer >= 0")
        _check(_count(self.batch_size) and self.batch_size >= 1, f"{n}.batch_size",
               self.batch_size, "an integer >= 1")
        _check(self.optimizer in ("sgd", "adam"), f"{n}.optimizer", self.optimizer, "sgd or adam")
        _check(_num(self.lr) and self.lr > 0, f"{n}.lr", self.lr, "a number > 0")
        _check(_num(self.momentum) and 0 <= self.momentum < 1, f"{n}.momentum", self.momentum,
               "a number in [0, 1)")


@dataclass(frozen=True)
class CurveConfig:
    """The accuracy-versus-labels sweep (``privtool select --strategy all``): every strategy
    at every budget, ``seeds`` seeds each, from the same parent."""

    strategies: Any = "all"          # all | a list of strategy names
    budgets: Any = (10, 20, 50)      # N_labeled values
    seeds: int = 5                   # paper 2 averages 5 runs

    def __post_init__(self) -> None:
        s = self.strategies
        if isinstance(s, str) and s != "all":
            s = [t.strip() for t in s.split(",") if t.strip()]
        _check(s == "all" or (isinstance(s, (list, tuple)) and len(s) > 0
                              and all(isinstance(t, str) and t for t in s)),
               "select.curve.strategies", self.strategies, "all or a list of strategy names")
        object.__setattr__(self, "strategies", s if s == "all" else list(s))
        b = self.budgets
        if isinstance(b, str):
            try:
                b = [int(t) for t in b.split(",") if t.strip()]
            except ValueError:
                pass
        if _count(b):
            b = [b]
        _check(isinstance(b, (list, tuple)) and len(b) > 0
               and all(_count(t) and t >= 1 for t in b),
               "select.curve.budgets", self.budgets, "a list of integers >= 1, e.g. [10, 20, 50]")
        object.__setattr__(self, "budgets", sorted(set(int(t) for t in b)))
        _check(_count(self.seeds) and self.seeds >= 1, "select.curve.seeds", self.seeds,
               "an integer >= 1")


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
    uncertainty: str = "entropy"     # entropy | margin: SelectUncertain's score
    k: int | None = None             # uncertain candidates (k > N_labeled); null: 4 × n_labeled
    n_components: int = 16           # p, principal components of the embeddings
    n_each: int = 1                  # diverse-public: points per cluster (N_cluster = N / n_each)
    epsilon_limit: float | None = None
    near_private: NearPrivateConfig = field(default_factory=NearPrivateConfig)
    pollution: PollutionConfig = field(default_factory=PollutionConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)

    def __post_init__(self) -> None:
        _check(isinstance(self.strategy, str) and bool(self.strategy), "select.strategy",
               self.strategy, "a strategy name (privtool select --help lists them)")
        _check(_count(self.n_labeled) and self.n_labeled >= 1, "select.n_labeled",
               self.n_labeled, "an integer >= 1")
        _check(_count(self.seed), "select.seed", self.seed, "an integer")
        _check(self.device in ("auto", "cpu", "cuda"), "select.device", self.device,
               "auto, cpu or cuda")
        _check(self.public_dataset is None or (isinstance(self.public_dataset, str)
                                               and bool(self.public_dataset)),
               "select.public_dataset", self.public_dataset,
               "null (the private dataset's public split) or a dataset name")
        _check(self.public_split is None or (isinstance(self.public_split, str)
                                             and bool(self.public_split)),
               "select.public_split", self.public_split, "null, a split name, or all")
        _check(self.uncertainty in ("entropy", "margin"), "select.uncertainty",
               self.uncertainty, "entropy or margin")
        _check(self.k is None or (_count(self.k) and self.k >= 1), "select.k", self.k,
               "an integer >= 1 or null (4 × n_labeled)")
        _check(_count(self.n_components) and self.n_components >= 1, "select.n_components",
               self.n_components, "an integer >= 1")
        _check(_count(self.n_each) and self.n_each >= 1, "select.n_each", self.n_each,
               "an integer >= 1")
        _check(self.epsilon_limit is None or (_num(self.epsilon_limit) and self.epsilon_limit > 0),
               "select.epsilon_limit", self.epsilon_limit, "a number > 0 or null")
        for name, cls in (("near_private", NearPrivateConfig), ("pollution", PollutionConfig),
                          ("finetune", FinetuneConfig), ("curve", CurveConfig)):
            object.__setattr__(self, name, _sub(cls, f"select.{name}", getattr(self, name)))


SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig, "pretrain": PretrainConfig,
                           "select": SelectConfig}
# Sections owned by stages that later issues add, and `sweep` (the grid dvc.yaml expands);
# accepted so a full params.yaml loads.
OTHER_SECTIONS = ("attack", "calibrate", "report", "sweep", "audit")


def defaults() -> dict[str, dict[str, Any]]:
    """The default params of every section, as plain dicts."""
    return {name: asdict(cls()) for name, cls in SECTIONS.items()}


def _parse_value(text: str) -> Any:
    """A --set value as YAML would read it, plus YAML 1.2 floats like 1e-5."""
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML, so 1e-5 is a float)."""
    out = copy.deepcopy(params)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise PrivtoolError(f"--set {item!r} must look like section.key=value, "
                                f"e.g. --set train.epochs=3")
        dotted, raw = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        value = _parse_value(raw.strip())
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            raise PrivtoolError(f"--set {item!r}: params section {section!r} is not a mapping")
        if "." in key:  # nested, e.g. data.splits.train=0.4
            outer, inner = key.split(".", 1)
            nested = target.setdefault(outer, {})
            if not isinstance(nested, dict):
                raise PrivtoolError(f"--set {item!r}: {section}.{outer} is not a mapping")
            nested[inner] = value
        else:
            target[key] = value
    return out


def _coerce(cls: type, section: str, raw: Mapping[str, Any]) -> Any:
    valid = [f.name for f in fields(cls)]
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise PrivtoolError(f"unknown params key {section}.{unknown[0]}; valid keys in "
                            f"'{section}': {', '.join(valid)}")
    kwargs = dict(raw)
    # YAML reads 1e-5 as a string under YAML 1.1; accept numeric strings for float fields.
    for f in fields(cls):
        v = kwargs.get(f.name)
        if isinstance(v, str) and ("float" in str(f.type) or "int" in str(f.type)):
            try:
                kwargs[f.name] = int(v) if "int" in str(f.type) and v.lstrip("-").isdigit() else float(v)
            except ValueError:
                pass
        if isinstance(kwargs.get(f.name), float) and "int" in str(f.type) and "float" not in str(f.type):
            if kwargs[f.name].is_integer():
                kwargs[f.name] = int(kwargs[f.name])
    return cls(**kwargs)


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


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None,
                *, required: bool = False) -> Params:
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
                raise PrivtoolError(f"{p} is not valid YAML{where}; fix the file or pass "
                                    f"another with --params") from None
            if not isinstance(loaded, dict):
                raise PrivtoolError(f"{p} must be a mapping of sections (data:, train:, ...)")
            file_params = loaded
        elif required:
            raise PrivtoolError(f"params file {p} not found; pass an existing file with "
                                f"--params or omit it to use the defaults")
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
    merged = apply_overrides(merged, overrides or [])
    for section in merged:
        if section not in SECTIONS and section not in OTHER_SECTIONS:
            valid = ", ".join(list(SECTIONS) + list(OTHER_SECTIONS))
            raise PrivtoolError(f"unknown params section {section!r}; valid sections: {valid}")
    data = _coerce(DataConfig, "data", merged["data"])
    train = _coerce(TrainConfig, "train", merged["train"])
    pretrain = _coerce(PretrainConfig, "pretrain", merged["pretrain"])
    select = _coerce(SelectConfig, "select", merged["select"])
    return Params(data=data, train=train, raw=merged, pretrain=pretrain, select=select)
