"""Stage ``store``: a target run's recipe -> the reference/shadow model store membership
attacks share (``privtool store``; settings in ``params.yaml: attack:`` — ``n_models``,
``seed``, ``workers``, ``device`` — because the attacks read the same keys to find it).

The store is built (or resumed, or extended to more models) in place, one atomic file per
model, so a killed run keeps the models it finished; see
:mod:`privtool.store`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privtool.attacks.base import attack_settings
from privtool.training import resolve_device


def run(
    target_spec: str,
    out: str | Path | None,
    raw_params: dict[str, Any],
    *,
    role: str = "reference",
    online: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Build the store ``target_spec``'s attacks need into ``out`` (None: the default
    ``runs/store/<dataset>-<model>-<hash>``) and return a summary."""
    from dataclasses import replace

    from privtool.artifacts import check_out
    from privtool.attacks.target import load_target
    from privtool.errors import PrivtoolError
    from privtool.store import ensure_store

    if role not in ("reference", "shadow"):
        raise PrivtoolError(
            f"--role {role!r} is not allowed: reference (the target's recipe "
            f"without DP) or shadow (the target's own recipe)"
        )
    cfg, _ = attack_settings(raw_params.get("attack"), "store")
    cfg = replace(cfg, store=None if out is None else str(out))
    check_out(out)
    target = load_target(target_spec, resolve_device(cfg.device))
    store = ensure_store(target, cfg, role=role, online=online, build=True, progress=progress)
    if cfg.augment != "none":  # lira / rmia augmented queries, once per model (attacks.queries)
        from privtool.attacks.queries import store_query_logits

        store_query_logits(store, target, cfg.augment, build=True, progress=progress)
    return {
        "role": role,
        "online": online,
        "target_mechanism": target.mechanism,
        "dataset": target.data.name,
        "model": target.params.train.model,
        "store_seconds": round(store.seconds, 3),
        "augment": cfg.augment,
        **store.describe(),
    }
