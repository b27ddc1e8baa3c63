"""Stage ``attack``: a trained run -> attack results (metrics, scores, ROC / image grids)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from privtool.artifacts import check_out, file_hash, staged_dir
from privtool.attacks import ATTACKS, attack_settings
from privtool.stages.common import finish_run
from privtool.training import resolve_device


def run(
    name: str,
    target_spec: str,
    out: str | Path,
    raw_params: dict[str, Any],
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """Run attack ``name`` against ``target_spec`` (RUN_DIR or RUN_DIR@EPOCH) into ``out``."""
    from privtool.attacks.target import load_target

    cfg, options = attack_settings(raw_params.get("attack"), name)
    check_out(out)
    attack = ATTACKS.get(name)(cfg, options)
    target = load_target(target_spec, resolve_device(cfg.device))
    attack.check(target)
    # long attacks save finished chunks of targets here, so a killed run resumes
    attack.resume_dir = Path(out).parent / f".{Path(out).name}.resume"
    with staged_dir(out) as tmp:
        result = attack.run(target, tmp, progress).for_target(name, target.describe())
        assert result.kind == attack.kind, f"{name} returned a {result.kind} result"
        metrics = result.to_json()  # metrics.json and --json: privtool.results
        payload = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        finish_run(
            tmp,
            stage="attack",
            params={"attack": {**raw_params.get("attack", {}), "name": name}},
            metrics=metrics,
            device=str(target.device),
            payload=payload,
            inputs={
                "target": {
                    "dir": str(target.dir),
                    "epoch": target.epoch,
                    "meta_sha256": file_hash(target.dir / "meta.json"),
                }
            },
        )
    shutil.rmtree(attack.resume_dir, ignore_errors=True)
    return metrics
