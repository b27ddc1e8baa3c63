"""The exact command that reproduces a stage directory, rebuilt from its meta.json params.

Every key of the sections the stage reads is passed with ``--set``, so the command does not
depend on the params.yaml of whoever runs it.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Mapping

import yaml

#: stage -> params sections it reads (and records in meta.json)
STAGE_SECTIONS = {
    "train": ("data", "train", "pretrain"),
    "select": ("select",),
    "attack": ("attack",),
    "audit": ("audit",),
}
#: keys a stage adds to its recorded params that are not settings
_RECORDED_ONLY = {"attack": ("name",)}


def _value(v: Any) -> str:
    """A value as ``--set`` parses it back (YAML, plus YAML-1.2 floats like 1e-05)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        try:
            same = yaml.safe_load(v) == v
        except yaml.YAMLError:
            same = False
        return v if same and v.strip() == v and v else json.dumps(v)
    return json.dumps(v, sort_keys=True)


def set_flags(section: str, values: Mapping[str, Any]) -> list[str]:
    """``section: {k: v, group: {k2: v2}}`` -> ``section.k=v``, ``section.group.k2=v2``."""
    flags = []
    for key in sorted(values):
        v = values[key]
        if isinstance(v, Mapping) and v:
            flags += [f"{section}.{key}.{k2}={_value(v[k2])}" for k2 in sorted(v)]
        else:
            flags.append(f"{section}.{key}={_value(v)}")
    return flags


def reproduce(
    stage: str,
    params: Mapping[str, Any],
    out: str,
    *,
    target: str | None = None,
    attack: str | None = None,
) -> str:
    """``privtool <stage> [--attack A] [--target T] --out OUT --set ...`` as a shell command
    (one ``--set`` per line)."""
    head = ["privtool", stage]
    if attack is not None:
        head += ["--attack", attack]
    if target is not None:
        head += ["--target", target]
    head += ["--out", out]
    flags: list[str] = []
    for section in STAGE_SECTIONS.get(stage, ()):
        values = dict(params.get(section) or {})
        for k in _RECORDED_ONLY.get(section, ()):
            values.pop(k, None)
        if section == "train" and values:  # runs before train.noise_seed drew noise from seed
            values.setdefault("noise_seed", "from-seed")
        flags += set_flags(section, values)
    lines = [" ".join(shlex.quote(h) for h in head)]
    lines += [f"  --set {shlex.quote(f)}" for f in flags]
    return " \\\n".join(lines)
