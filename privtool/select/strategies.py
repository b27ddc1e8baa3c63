"""Selection strategies (paper 2 §3), registered by name in :data:`STRATEGIES`.

A strategy sees the DP model's signals on the unlabelled public pool (and, only if it declares
``uses_private``, on the private training data), and returns ``n_labeled`` distinct pool indices
plus the privacy releases it made. It never sees a label: the caller reveals the labels of the
chosen points afterwards.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from privtool.config import SelectConfig
from privtool.errors import PrivtoolError
from privtool.registry import Registry
from privtool.select.budget import Cost
from privtool.select.dp_pca import (
    analyze_gauss,
    nearest,
    noisy_support,
    normalise_rows,
    support_sensitivity,
)
from privtool.select.signals import Signals, most_uncertain


@dataclass
class Task:
    """One selection: the budget, the pool's signals, and (behind a call, so only strategies
    that pay for it touch them) the private training data's signals."""

    n_labeled: int
    public: Signals
    cfg: SelectConfig
    rng: np.random.Generator
    relation: str  # the parent's record-level relation
    private: Callable[[], Signals] | None = None
    epsilon_support: float | None = None  # overrides cfg (budget planning)
    noise_rng: np.random.Generator | None = None  # DP noise of private releases; None: rng

    @property
    def noise(self) -> np.random.Generator:
        """The generator of DP noise (secret unless the parent's noise is from-seed)."""
        return self.rng if self.noise_rng is None else self.noise_rng

    @property
    def n_pool(self) -> int:
        return len(self.public.logits)

    @property
    def k(self) -> int:
        """Uncertain candidates: select.k, default 4 × n_labeled, at most the pool."""
        k = self.cfg.k if self.cfg.k is not None else 4 * self.n_labeled
        if k < self.n_labeled:
            raise PrivtoolError(
                f"select.k={k} is not allowed: at least n_labeled="
                f"{self.n_labeled} (paper 2: k > N_labeled)"
            )
        return min(k, self.n_pool)


@dataclass
class Selection:
    """What a strategy returns: pool indices, its releases, and numbers worth recording."""

    indices: np.ndarray
    costs: list[Cost] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """Base of the entries of :data:`STRATEGIES`."""

    name: ClassVar[str]
    uses_private: ClassVar[bool] = False

    @classmethod
    def costs(
        cls, cfg: SelectConfig, relation: str, epsilon_support: float | None = None
    ) -> list[Cost]:
        """The releases about private data this strategy makes (none: post-processing only)."""
        return []

    @abstractmethod
    def select(self, task: Task) -> Selection:
        """Pick ``task.n_labeled`` distinct pool indices."""


STRATEGIES: Registry[type[Strategy]] = Registry("selection strategy")


@STRATEGIES.register("random")
class Random(Strategy):
    """N points uniformly without replacement (paper 2 §3.1's first baseline)."""

    name = "random"

    def select(self, task: Task) -> Selection:
        idx = task.rng.choice(task.n_pool, size=task.n_labeled, replace=False)
        return Selection(np.asarray(idx, dtype=np.int64))


class _Uncertain(Strategy):
    """The N most uncertain points (uncertainty sampling, Settles 2009; paper 2 §3.1)."""

    kind: ClassVar[str]

    def select(self, task: Task) -> Selection:
        return Selection(most_uncertain(task.public.logits, task.n_labeled, self.kind))


@STRATEGIES.register("entropy")
class Entropy(_Uncertain):
    """Largest entropy of the softmax."""

    name, kind = "entropy", "entropy"


@STRATEGIES.register("margin")
class Margin(_Uncertain):
    """Smallest difference of the two largest logits (paper 2's 'difference')."""

    name, kind = "margin", "margin"


def pca(x: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, d × p principal directions) of the rows of ``x`` (SVD of the centred matrix;
    each direction's sign fixed so its largest coordinate is positive)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    p = min(n_components, x.shape[1], len(x))
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:p].T
    signs = np.sign(comps[np.abs(comps).argmax(0), np.arange(p)])
    return mean, comps * np.where(signs == 0, 1.0, signs)


def public_pca(signals: Signals, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pca` of a pool's embeddings, computed once per pool and parent."""
    key = f"pca-{n_components}"
    if key not in signals.cache:
        signals.cache[key] = pca(signals.embeddings, n_components)
    return signals.cache[key]


def take_centre_points(
    points: np.ndarray, n_labeled: int, n_clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-means ``points`` into ``n_clusters``; take the points nearest each centre, round robin
    (each cluster's nearest, then each one's second nearest, ...) until ``n_labeled`` are taken.
    Returns (row indices into ``points``, cluster label of each row)."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(points)
    dist = np.linalg.norm(points - km.cluster_centers_[km.labels_], axis=1)
    ranked = [
        np.flatnonzero(km.labels_ == c)[np.argsort(dist[km.labels_ == c], kind="stable")]
        for c in range(n_clusters)
    ]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n_labeled:
        for members in ranked:
            if depth < len(members) and len(chosen) < n_labeled:
                chosen.append(int(members[depth]))
        depth += 1
    return np.asarray(chosen, dtype=np.int64), km.labels_


@STRATEGIES.register("diverse-public")
class DiversePublic(Strategy):
    """Paper 2, Alg. 1: PCA of the public embeddings to p components, the k most uncertain
    public points projected, k-means into N_cluster = ⌈N / N_each⌉ clusters, the N_each points
    nearest each centre. Public data and the DP model only: no ε."""

    name = "diverse-public"

    def select(self, task: Task) -> Selection:
        cfg = task.cfg
        mean, comps = public_pca(task.public, cfg.n_components)
        cand = most_uncertain(task.public.logits, task.k, cfg.uncertainty)
        points = (task.public.embeddings[cand] - mean) @ comps
        n_clusters = min(-(-task.n_labeled // cfg.n_each), len(cand))
        seed = int(task.rng.integers(2**31 - 1))
        rows, labels = take_centre_points(points, task.n_labeled, n_clusters, seed)
        return Selection(
            cand[rows],
            details={"n_clusters": n_clusters, "k": len(cand), "n_components": comps.shape[1]},
        )


def support_voters(logits: np.ndarray, private_k: int | None, kind: str) -> np.ndarray:
    """The private points that vote for a support count: the ``private_k`` most uncertain
    (all of them when there are at most ``private_k``), or every one when ``private_k`` is
    null. Whether a top-k filter applies is configuration, never the data's size: the Laplace
    sensitivity (:func:`~privtool.select.dp_pca.support_sensitivity`) is chosen from it alone."""
    if private_k is None:
        return np.arange(len(logits))
    return most_uncertain(logits, private_k, kind)


@STRATEGIES.register("near-private")
class NearPrivate(Strategy):
    """Paper 2, Alg. 2: DP-PCA (Analyze Gauss, ε_dpPCA, δ_dpPCA) of the private training
    embeddings; the voting private points (``near_private.private_k`` most uncertain, or all)
    and the uncertain public candidates projected onto it; each private point votes for its
    nearest candidate; counts + Laplace(Δ₁/ε_support); the N highest.

    Two choices beyond Alg. 2, both free of ε (public data and the DP model only), tuned on
    mnist-5k with a polluted pool (README): the embeddings are first mapped into the pool's top
    ``near_private.public_dims`` principal components (centred by the pool's mean), where the
    DP-PCA noise (spectral norm ≈ 2σ√d) is far smaller than in the raw 588-wide LeNet
    embedding; and the candidates are the ``public_k`` most uncertain (default half the pool),
    because with only 4N candidates a few out-of-distribution 'hubs' collect the most votes.
    Rows are scaled to unit norm, as Analyze Gauss needs ‖x‖ ≤ 1."""

    name = "near-private"
    uses_private = True

    @classmethod
    def costs(
        cls, cfg: SelectConfig, relation: str, epsilon_support: float | None = None
    ) -> list[Cost]:
        np_cfg = cfg.near_private
        eps_s = epsilon_support if epsilon_support is not None else np_cfg.epsilon_support
        if eps_s is None:
            raise PrivtoolError(
                "select.near_private.epsilon_support=null needs --epsilon-limit "
                "(it then gets what the limit leaves); give a number or a limit"
            )
        return [
            Cost(
                "DP-PCA (Analyze Gauss)",
                float(np_cfg.epsilon_pca),
                float(np_cfg.delta_pca),
                relation,
            ),
            Cost("support counts (Laplace)", float(eps_s), 0.0, relation),
        ]

    def select(self, task: Task) -> Selection:
        if task.private is None:
            raise PrivtoolError("near-private needs the private training data of the target run")
        cfg, np_cfg = task.cfg, task.cfg.near_private
        eps_s = task.epsilon_support if task.epsilon_support is not None else np_cfg.epsilon_support
        private = task.private()
        if np_cfg.public_dims is not None:
            mean, comps = public_pca(task.public, np_cfg.public_dims)
        else:
            mean = task.public.embeddings.mean(0)
            comps = np.eye(task.public.embeddings.shape[1])
        x_priv = normalise_rows((private.embeddings - mean) @ comps)
        x_pub = normalise_rows((task.public.embeddings - mean) @ comps)
        dp = analyze_gauss(
            x_priv,
            n_components=min(cfg.n_components, x_priv.shape[1]),
            epsilon=np_cfg.epsilon_pca,
            delta=np_cfg.delta_pca,
            rng=task.noise,
            relation=task.relation,
        )
        voters = support_voters(private.logits, np_cfg.private_k, cfg.uncertainty)
        k = np_cfg.public_k if np_cfg.public_k is not None else max(task.k, -(-task.n_pool // 2))
        if k < task.n_labeled:
            raise PrivtoolError(
                f"select.near_private.public_k={k} is not allowed: at least "
                f"n_labeled={task.n_labeled}"
            )
        cand = most_uncertain(task.public.logits, min(k, task.n_pool), cfg.uncertainty)
        votes = nearest(dp.project(x_priv[voters]), dp.project(x_pub[cand]))
        sens = support_sensitivity(task.relation, top_k=np_cfg.private_k is not None)
        noisy, _, scale = noisy_support(
            votes, len(cand), epsilon=float(eps_s), sensitivity=sens, rng=task.noise
        )
        order = np.lexsort((np.arange(len(cand)), -noisy))[: task.n_labeled]
        return Selection(
            cand[order],
            costs=self.costs(cfg, task.relation, eps_s),
            details={
                "dp_pca_sigma": dp.sigma,
                "dp_pca_calibration": dp.calibration,
                "dp_pca_sensitivity": dp.sensitivity,
                "support_sensitivity": sens,
                "support_laplace_scale": scale,
                "n_private_voters": int(len(voters)),
                "k": int(len(cand)),
                "n_components": int(dp.components.shape[1]),
                "dp_pca_input_dims": int(x_priv.shape[1]),
            },
        )
