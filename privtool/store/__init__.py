"""The reference/shadow model store: train N models once, keep their signals, reuse them.

A store holds models of one recipe on one dataset and split, and each model's logits on every
point a membership attack may ask about (the target's ``shadow``, ``train`` and ``test``
splits), with the model's in/out membership mask over those points (ML Privacy Meter's
habit: attacks are pure functions of these saved signals, so adding an attack never retrains).

Two sets of models, each drawn in complementary pairs (model 2k trains on a random half of
its pool, model 2k+1 on the other half, so every pool point is "in" for exactly half of an
even number of models):

* ``offline`` — pool = the ``shadow`` split only (paper 1 §5.1–5.2: shadow / reference models
  never see the target's data). MIA-R, offline LiRA and Shokri use these.
* ``online`` — pool = train ∪ test, the points an evaluation set is drawn from (Carlini et
  al. 2022's online LiRA: models with and without each evaluation point).

The recipe is the target's own (``shadow`` role: DP included, the models mimic the target) or
its non-DP version (``reference`` role: paper 1 §5.2 "reference models are never trained with
DP"); for a non-private target both are the same store.

Rooms (each module's docstring says what it holds):

* :mod:`~privtool.store.identity` — recipe record and hash, store identity and its check,
  the models' masks and seeds;
* :mod:`~privtool.store.storage` — on-disk layout, atomic writes, ``store.json``,
  :class:`Store` (the saved signals, read back);
* :mod:`~privtool.store.build` — one model from its job: train, compute signals, save;
* back ends: :mod:`~privtool.store.process` (in-process / one process per core),
  :mod:`~privtool.store.stacked` (vmap: many non-private models at once),
  :mod:`~privtool.store.ray_tasks` (Ray tasks);
* :mod:`~privtool.store.ensure` — :func:`ensure_store`: what is missing, which back end.

The store imports no attack: the loss helpers both sides need live in
:mod:`privtool.attacks.signals`; the attacks ask the store for signals, never the reverse.
"""

from privtool.store.build import predict_logits
from privtool.store.ensure import BACKENDS, check_store_inputs, ensure_store
from privtool.store.identity import (
    KINDS,
    model_mask,
    model_seed,
    recipe_record,
    store_identity,
    store_points,
)
from privtool.store.process import cpu_count
from privtool.store.storage import Store

__all__ = [
    "BACKENDS",
    "KINDS",
    "Store",
    "check_store_inputs",
    "cpu_count",
    "ensure_store",
    "model_mask",
    "model_seed",
    "predict_logits",
    "recipe_record",
    "store_identity",
    "store_points",
]
