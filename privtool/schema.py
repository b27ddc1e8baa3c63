"""One validation path for every setting: params files, ``--set`` overrides and CLI flags.

Every settings group is a frozen dataclass (``TrainConfig``, ``AttackConfig``,
``IGAOptions``, ...). Its fields' *types* come from their annotations and defaults; their
*ranges*, *choices* and *help* from :func:`settings`, a class decorator that attaches one
:class:`Rule` per field (a field without a rule still gets its type checked). The
dataclass's ``__post_init__`` calls :func:`validate`, so a value is checked the same way
whether it came from a params file, ``--set section.key=value``, a CLI flag (the CLI turns
flags into the same ``section.key=value`` overrides) or Python code.

Conventions, so a wrong value never slips through or gets a traceback:

* booleans are not numbers (``train.epochs=true`` is refused), numbers are not booleans;
* YAML 1.1 reads ``1e-5`` as a string: a string that spells a number is accepted as that
  number for a number field (``"1e3"`` for an integer field too, ``"1.5"`` is not an integer);
* the type is checked before the range (``attack.delta=abc`` says "a number in (0, 1)");
* the error is one line naming the key, the bad value and what is allowed:
  ``train.epochs='abc' is not allowed: an integer >= 1``;
* an unknown key names the key and lists the valid ones (:func:`build`);
* ``--set section.key=value`` is read by :func:`apply_overrides` (the value as YAML, plus
  YAML 1.2 floats such as ``1e-5``), so overrides and params files give the same values.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from privtool.errors import PrivtoolError

_NONE = type(None)
_MAPPINGS = (dict, Mapping, collections.abc.Mapping)
SEED_MAX = 2**32 - 1  # numpy's legacy seeding bound; torch and default_rng accept it too


@dataclass(frozen=True)
class Rule:
    """What one field accepts beyond its type, and its help text.

    ``ge``/``gt``/``le``/``lt`` bound numbers; ``choices`` (a tuple, or a callable returning
    one, for registries filled at import time) lists the accepted values; ``registry`` (a
    :class:`~privtool.registry.Registry`) refuses unknown names in its own words;
    ``check`` is a last predicate for what the rest cannot say, with ``allowed`` its text
    (``allowed`` also replaces the generated text in errors); ``each`` is the rule of every
    value of a mapping field (``data.splits``).
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Any = None
    registry: Any = None
    check: Callable[[Any], bool] | None = None
    allowed: str | None = None
    help: str = ""
    each: Rule | None = None  # for a mapping: the rule of each of its values


def seed_rule(help: str = "random seed") -> Rule:
    """Seeds: integers in [0, 2³²−1] (numpy refuses negative seeds)."""
    return Rule(ge=0, le=SEED_MAX, help=help)


def settings(section: str | None = None, **rules: Rule) -> Callable[[type], type]:
    """Class decorator: attach ``rules`` (field name -> :class:`Rule`) and the key prefix
    ``section`` (e.g. ``"train"``, ``"select.finetune"``) to a settings dataclass. Put it above
    ``@dataclass``. Subclasses inherit their parents' rules and may override them."""

    def deco(cls: type) -> type:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(rules) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: rules for unknown fields {unknown}")
        cls.__rules__ = dict(rules)  # type: ignore[attr-defined]
        if section is not None:
            cls.__section__ = section  # type: ignore[attr-defined]
        _HINTS.pop(cls, None)
        return cls

    return deco


def invalid(key: str, value: Any, allowed: str) -> PrivtoolError:
    """The one error shape: ``key=value is not allowed: allowed``."""
    return PrivtoolError(f"{key}={value!r} is not allowed: {allowed}")


def section_of(cls: type) -> str:
    """The key prefix of a settings class (``train``, ``attack.iga``)."""
    sec = getattr(cls, "__section__", None) or getattr(cls, "section", None)
    return str(sec) if sec else cls.__name__


def key_of(cls: type, name: str) -> str:
    """``section.name``; just ``name`` for settings without a params section (``""``:
    command-line-only settings such as ``privtool epsilon``'s)."""
    if getattr(cls, "__section__", None) == "":
        return name
    return f"{section_of(cls)}.{name}"


def rules_of(cls: type) -> dict[str, Rule]:
    """Every field's rule, parents' first (a subclass overrides)."""
    out: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("__rules__", {}))
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (Any where it cannot be resolved)."""
    if cls in _HINTS:
        return _HINTS[cls]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something only importable for type checkers
        hints = {}
        for klass in reversed(cls.__mro__):
            glob = vars(sys.modules.get(klass.__module__, typing))
            for name, ann in klass.__dict__.get("__annotations__", {}).items():
                try:
                    hints[name] = eval(ann, glob) if isinstance(ann, str) else ann
                except Exception:
                    hints[name] = Any
    out = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):  # `x: int = None` means an integer or null
        if f.default is None and not _optional(out[f.name])[1] and out[f.name] is not Any:
            out[f.name] = typing.Optional[out[f.name]]
    _HINTS[cls] = out
    return out


def _optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else Any), True
    return tp, False


def _is_settings(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def type_text(tp: Any) -> str:
    """``an integer``, ``a number``, ... for a (non-optional) annotation."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a non-empty string"
    if origin in _MAPPINGS or tp in _MAPPINGS:
        args = typing.get_args(tp)
        return f"a mapping of name: {type_text(args[1])[2:] if len(args) == 2 else 'value'}"
    if _is_settings(tp):
        return "a mapping of key: value"
    return "a value"


def _bounds_text(r: Rule) -> str:
    lo = ("[", r.ge) if r.ge is not None else ("(", r.gt) if r.gt is not None else None
    hi = ("]", r.le) if r.le is not None else (")", r.lt) if r.lt is not None else None
    if lo and hi:
        return f" in {lo[0]}{_fmt(lo[1])}, {_fmt(hi[1])}{hi[0]}"
    if lo:
        return f" {'>=' if lo[0] == '[' else '>'} {_fmt(lo[1])}"
    if hi:
        return f" {'<=' if hi[0] == ']' else '<'} {_fmt(hi[1])}"
    return ""


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _choices(r: Rule) -> list[Any] | None:
    if r.registry is not None:
        return list(r.registry.names())
    if r.choices is None:
        return None
    return list(r.choices() if callable(r.choices) else r.choices)


def _join(items: list[Any]) -> str:
    words = [str(c) for c in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def allowed_text(tp: Any, rule: Rule | None) -> str:
    """What a field accepts, in words (the tail of every error about it)."""
    inner, optional = _optional(tp)
    r = rule or Rule()
    if r.allowed:
        return r.allowed
    choices = _choices(r)
    if choices is not None:
        text = _join(choices + (["null"] if optional else []))
        return text
    text = type_text(inner) + (_bounds_text(r) if inner in (int, float) else "")
    return text + (" or null" if optional else "")


def _number(value: Any, *, integer: bool) -> Any:
    """``value`` as an int/float, or ``None`` when it is not one (bools never are)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if integer:
            return int(value) if value.is_integer() else None
        return value
    return None


def coerce(tp: Any, value: Any, key: str, rule: Rule | None = None) -> Any:
    """``value`` checked against annotation ``tp`` and ``rule``; returns the value to store
    (numeric strings as numbers, integral floats as ints for integer fields)."""
    inner, optional = _optional(tp)
    r = rule or Rule()
    if value is None:
        if optional:
            return None
        raise invalid(key, value, allowed_text(tp, rule))
    bad = invalid(key, value, allowed_text(tp, rule))
    origin = typing.get_origin(inner)
    if inner is bool:
        if not isinstance(value, bool):
            raise bad
    elif inner in (int, float):
        num = _number(value, integer=inner is int)
        if num is None:
            raise bad
        if (
            (r.ge is not None and not num >= r.ge)
            or (r.gt is not None and not num > r.gt)
            or (r.le is not None and not num <= r.le)
            or (r.lt is not None and not num < r.lt)
        ):
            raise bad
        value = num
    elif inner is str:
        if not isinstance(value, str) or not value:
            raise bad
    elif origin in _MAPPINGS or inner in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise bad
        args = typing.get_args(inner)
        vt = args[1] if len(args) == 2 else Any
        value = {str(k): coerce(vt, v, f"{key}.{k}", r.each) for k, v in value.items()}
    elif _is_settings(inner):
        return build(inner, value, key)
    if r.registry is not None:
        if value not in r.registry:
            raise PrivtoolError(f"unknown {key} {value!r}; valid: {', '.join(r.registry.names())}")
    else:
        choices = _choices(r)
        if choices is not None and value not in choices:
            raise bad
    if r.check is not None and not r.check(value):
        raise bad
    return value


def check_field(cls: type, name: str, value: Any) -> Any:
    """One field of ``cls`` checked (and coerced) on its own: the override path."""
    return coerce(_hints(cls)[name], value, key_of(cls, name), rules_of(cls).get(name))


def validate(obj: Any) -> None:
    """Check and coerce every field of a frozen settings dataclass in place (call it first
    in ``__post_init__``); cross-field checks follow it there and raise :func:`invalid`."""
    cls = type(obj)
    hints, rules = _hints(cls), rules_of(cls)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        new = coerce(hints[f.name], value, key_of(cls, f.name), rules.get(f.name))
        if new is not value:
            object.__setattr__(obj, f.name, new)


def build(cls: type, value: Any, key: str | None = None) -> Any:
    """A mapping of settings (a params section) -> a validated ``cls``; ``None`` -> the
    defaults; an unknown key names the key and the valid ones."""
    key = key or section_of(cls)
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise invalid(key, value, "a mapping of key: value")
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise PrivtoolError(
            f"unknown params key {key}.{unknown[0]}; valid keys in '{key}': "
            f"{', '.join(valid) or '(none)'}"
        )
    return cls(**dict(value))


def describe(cls: type) -> list[dict[str, str]]:
    """Each field's key, default, what it accepts and its help (for docs and --help)."""
    hints, rules = _hints(cls), rules_of(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else None
        )
        rule = rules.get(f.name)
        out.append(
            {
                "key": key_of(cls, f.name),
                "default": repr(default),
                "allowed": allowed_text(hints[f.name], rule),
                "help": rule.help if rule else "",
            }
        )
    return out


def field_type(cls: type, name: str) -> Any:
    """The resolved annotation of field ``name`` of ``cls`` (Optional unwrapped)."""
    return _optional(_hints(cls)[name])[0]


# ------------------------------------------------------------------ --set overrides


def _parse_value(text: str) -> Any:
    """A --set value as YAML would read it, plus YAML 1.2 floats like 1e-5."""
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def apply_overrides(
    params: dict[str, Any], overrides: list[str], replaced: Callable[[str, Any], None] | None = None
) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (value parsed as YAML, so 1e-5 is a float).

    ``replaced(dotted_key, old_value)`` is called for every value an override replaces, so
    the caller can validate it too (a bad value is an error even when a flag overrides it)."""
    out = copy.deepcopy(params)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise PrivtoolError(
                f"--set {item!r} must look like section.key=value, e.g. --set train.epochs=3"
            )
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
            if replaced is not None and inner in nested:
                replaced(dotted.strip(), nested[inner])
            nested[inner] = value
        else:
            if replaced is not None and key in target:
                replaced(dotted.strip(), target[key])
            target[key] = value
    return out
