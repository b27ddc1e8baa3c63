"""Membership inference scores as pure functions of saved signals (paper 1 §5.1–5.2; SPEC §6).

Every function maps saved arrays — the target's losses or logits on the evaluation points and
the reference/shadow models' ones on the same points with their in/out masks — to one score per
point, higher meaning "member" (ML Privacy Meter's habit: adding an attack never retrains a
model). The registered attacks (:mod:`privtool.attacks.mia_attacks`) call them:

* ``loss`` — Yeom et al. 2018: the target's loss alone, one global threshold.
* ``reference`` — MIA-R, Ye et al. 2022 attack R: member iff the target's loss on x is below
  c_α(x), the α-quantile of the reference models' losses on x; the ROC sweeps α.
* ``lira`` — Carlini et al. 2022: Gaussian fits of the logit-scaled confidence
  φ = log(p_y / (1 − p_y)) under models without x (offline: one-sided test) and with x
  (online: likelihood ratio), with one global variance per fit when models are few (§4.2).
* ``shokri`` — Shokri et al. 2017 as paper 1 §5.1 runs it: one LightGBM attack model per class
  on shadow models' prediction vectors, trained only on points the shadow model classifies
  correctly (Irolla & Châtel 2019).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privtool.attacks.signals import log_softmax, scaled_logit


def loss_scores(target_loss: np.ndarray) -> np.ndarray:
    """Yeom et al. 2018: lower loss = more likely a member."""
    return -np.asarray(target_loss, dtype=np.float64)


def reference_alpha(
    target_loss: np.ndarray, ref_loss: np.ndarray, ref_out: np.ndarray
) -> np.ndarray:
    """MIA-R's per-point α: the smallest α with ℓ_target(x) ≤ c_α(x), where c_α is the
    linearly interpolated α-quantile (numpy's default, as ML Privacy Meter) of the losses of
    the reference models that did not train on x (``ref_out`` (N, n) True).

    ``ref_loss`` is (N, n). Points with no reference loss get α = 0.5. The attack "member at
    level α" is exactly ``alpha ≤ α``, so sweeping α is sweeping a threshold on −alpha.
    """
    t = np.asarray(target_loss, dtype=np.float64)
    r = np.where(ref_out, np.asarray(ref_loss, dtype=np.float64), np.nan)
    alpha = np.full(t.shape, 0.5)
    counts = ref_out.sum(axis=0)
    for k in np.unique(counts):
        if k == 0:
            continue
        cols = np.flatnonzero(counts == k)
        vals = np.sort(r[:, cols], axis=0)[:k]  # (k, m), NaNs sorted last
        if k == 1:
            alpha[cols] = (t[cols] > vals[0]).astype(float)
            continue
        # the quantile q(α) interpolates the order statistics v at position α(k − 1); invert
        # it: v[b−1] < ℓ ≤ v[b] with b = #{v < ℓ} gives position
        # b − 1 + (ℓ − v[b−1]) / (v[b] − v[b−1]).
        x = t[cols]
        below = (vals < x).sum(axis=0)
        i = np.clip(below - 1, 0, k - 2)
        j = np.arange(len(cols))
        lo, hi = vals[i, j], vals[i + 1, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(hi > lo, (x - lo) / (hi - lo), 1.0)
        pos = np.where(below == 0, 0.0, i + np.clip(frac, 0.0, 1.0))
        alpha[cols] = pos / (k - 1)
    return alpha


def reference_scores(
    target_loss: np.ndarray, ref_loss: np.ndarray, ref_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MIA-R scores (higher = member) and the per-point α they come from.

    The score is −α, nothing else: points tied in α (e.g. a target loss below every reference
    loss, α = 0) tie in score, so the ROC passes through a tie group on a straight segment and
    the AUC counts each member/non-member pair in it one half (Mann–Whitney), as Ye et al.'s
    attack — a threshold on α — does. Breaking such ties by the raw loss would mix in Yeom's
    attack, which is not MIA-R (and scored lower on mnist-5k: issue 17).
    """
    alpha = reference_alpha(target_loss, ref_loss, ref_out)
    return 0.0 - alpha, alpha


def _gauss_fit(
    phi: np.ndarray, mask: np.ndarray, global_var: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point mean and std of ``phi`` (N, n) over models where ``mask`` (N, n) is True."""
    cnt = mask.sum(axis=0)
    mu = np.where(cnt > 0, np.where(mask, phi, 0).sum(axis=0) / np.maximum(cnt, 1), np.nan)
    dev = np.where(mask, phi - mu, 0.0) ** 2
    if global_var:
        var = np.full(phi.shape[1], dev.sum() / max(int(cnt.sum()) - int((cnt > 0).sum()), 1))
    else:
        var = dev.sum(axis=0) / np.maximum(cnt - 1, 1)
    return mu, np.sqrt(np.maximum(var, 1e-12))


def lira_offline(
    target_phi: np.ndarray, ref_phi: np.ndarray, ref_out: np.ndarray, *, global_var: bool = True
) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022, Alg. 1 offline): one-sided test of the target's φ
    against N(μ_out(x), σ_out²); the score (φ − μ_out)/σ_out is monotone in its p-value."""
    mu, sd = _gauss_fit(ref_phi, ref_out, global_var)
    z = (np.asarray(target_phi, float) - mu) / sd
    return np.nan_to_num(z, nan=0.0)


def lira_online(
    target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray, *, global_var: bool = True
) -> np.ndarray:
    """Online LiRA (Carlini et al. 2022, Alg. 1): log N(φ; μ_in, σ_in²) − log N(φ; μ_out,
    σ_out²) from models trained with (``ref_in``) and without x."""
    mu_in, sd_in = _gauss_fit(ref_phi, ref_in, global_var)
    mu_out, sd_out = _gauss_fit(ref_phi, ~ref_in, global_var)
    t = np.asarray(target_phi, float)

    def logpdf(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
        return -0.5 * ((t - mu) / sd) ** 2 - np.log(sd)

    return np.nan_to_num(logpdf(mu_in, sd_in) - logpdf(mu_out, sd_out), nan=0.0)


def shokri_scores(
    shadow_logits: np.ndarray,
    shadow_in: np.ndarray,
    shadow_labels: np.ndarray,
    target_logits: np.ndarray,
    target_labels: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    n_estimators: int = 100,
    num_leaves: int = 15,
    learning_rate: float = 0.05,
    correct_only: bool = True,
) -> np.ndarray:
    """Shokri et al. 2017 with paper 1 §5.1's choices: one LightGBM attack model per class,
    fed the shadow models' prediction vectors (N models × P shadow points, label = member of
    that shadow model's training half), trained only on points that shadow model classifies
    correctly; each evaluation point is scored by its class's model on the target's
    prediction vector. A class without both labels scores 0.5."""
    import lightgbm as lgb

    prob = np.exp(log_softmax(shadow_logits))  # (N, P, C)
    correct = prob.argmax(-1) == shadow_labels[None, :]
    feats = prob.reshape(-1, prob.shape[-1])
    member = shadow_in.reshape(-1)
    label = np.broadcast_to(shadow_labels[None, :], shadow_in.shape).reshape(-1)
    keep = correct.reshape(-1) if correct_only else np.ones(member.shape, bool)
    target_prob = np.exp(log_softmax(target_logits))
    out = np.full(len(target_labels), 0.5)
    for c in range(n_classes):
        rows = keep & (label == c)
        test = np.flatnonzero(target_labels == c)
        if not test.size or len(np.unique(member[rows])) < 2:
            continue
        clf = lgb.LGBMClassifier(
            n_estimators=n_estimators,
            num_leaves=num_leaves,
            learning_rate=learning_rate,
            random_state=seed + c,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        clf.fit(feats[rows], member[rows].astype(int))
        out[test] = clf.predict_proba(target_prob[test])[:, 1]
    return out


def lira_queries(signals: dict[str, Any], global_var: bool) -> dict[str, np.ndarray]:
    """LiRA over augmented queries (Carlini et al. 2022 §VI-A): one Gaussian fit per query, the
    per-query scores averaged (their code's ``score.mean(1)``)."""
    store, idx, y = signals["store"], signals["index"], signals["labels"]
    pos = store.positions(idx)
    phi = scaled_logit(signals["query_logits"], y)  # (Q, n)
    out: dict[str, np.ndarray] = {}
    for kind in ("online", "offline"):
        ref = scaled_logit(signals["store_queries"][kind][:, :, pos], y)  # (N, Q, n)
        mask = store.signals_for(idx, kind=kind)["in"]
        per_query = [
            lira_online(phi[q], ref[:, q], mask, global_var=global_var)
            if kind == "online"
            else lira_offline(phi[q], ref[:, q], ~mask, global_var=global_var)
            for q in range(phi.shape[0])
        ]
        out[kind] = np.mean(per_query, axis=0)
    return out
