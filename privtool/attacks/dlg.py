"""DLG and iDLG (paper 1 §2.4): one L-BFGS run per target matching the released gradient.

* ``dlg`` — Zhu et al. 2019: dummy image and dummy soft label, L2 gradient matching, L-BFGS.
* ``idlg`` — Zhao et al. 2020: the label read off the last layer's gradient, then DLG on the
  image alone.

Both run in the :class:`~privtool.attacks.reconstruction.GradientAttack` frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from privtool.attacks.base import ATTACKS
from privtool.attacks.gradients import gradient_function
from privtool.attacks.matching import OBJECTIVES, labels_from_gradient
from privtool.attacks.reconstruction import (
    GradientAttack,
    GradientOptions,
    Reconstruction,
    advance,
)

# --------------------------------------------------------------------------- DLG / iDLG


@dataclass(frozen=True)
class DLGOptions(GradientOptions):
    """``attack.dlg`` / ``attack.idlg``: ``iterations`` is L-BFGS's budget of iterations (one
    L-BFGS run with a strong-Wolfe line search per target, which converges where DLG's fixed
    step of 1 diverges); ``lr`` its initial step."""

    iterations: int = 300
    lr: float = 1.0

    section: ClassVar[str] = "attack.dlg"


class _LBFGSAttack(GradientAttack):
    objective: ClassVar[str] = "l2"
    learn_labels: ClassVar[bool]

    def reconstruct(
        self, model, release, observed, image_shape, n_classes, generator, progress=None
    ):
        opt = self.options
        b = opt.batch_size
        device = observed[0].device
        grads_of = gradient_function(model)
        match = OBJECTIVES.get(self.objective)
        known = None if self.learn_labels else labels_from_gradient(model, observed, n_classes, b)
        images, labels, losses = [], [], []
        for t in range(observed[0].shape[0]):
            target_grads = [g[t : t + 1] for g in observed]
            x = torch.randn(1, b, *image_shape, device=device, generator=generator).requires_grad_()
            if self.learn_labels:
                z = torch.randn(
                    1, b, n_classes, device=device, generator=generator
                ).requires_grad_()
                variables = [x, z]
            else:
                fixed = torch.nn.functional.one_hot(known[t : t + 1], n_classes).to(x.dtype)
                variables = [x]
            lbfgs = torch.optim.LBFGS(
                variables,
                lr=opt.lr,
                max_iter=opt.iterations,
                max_eval=opt.iterations * 5 // 4,
                history_size=100,
                tolerance_grad=1e-10,
                tolerance_change=1e-14,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                lbfgs.zero_grad()
                prob = torch.softmax(z, -1) if self.learn_labels else fixed
                loss = match(release.expected(grads_of(x, prob)), target_grads).sum()
                loss.backward()
                return loss

            lbfgs.step(closure)
            with torch.no_grad():
                prob = torch.softmax(z, -1) if self.learn_labels else fixed
                final = match(release.expected(grads_of(x, prob)), target_grads)
            images.append(x.detach())
            labels.append(prob.argmax(-1))
            losses.append(final)
            advance(progress, loss=float(final.sum()))
        return Reconstruction(torch.cat(images), torch.cat(labels), torch.cat(losses))


@ATTACKS.register("dlg")
class DLG(_LBFGSAttack):
    """Deep Leakage from Gradients (Zhu et al. 2019): joint dummy image + soft label."""

    name = "dlg"
    learn_labels = True
    Options = DLGOptions


@dataclass(frozen=True)
class IDLGOptions(DLGOptions):
    section: ClassVar[str] = "attack.idlg"


@ATTACKS.register("idlg")
class IDLG(_LBFGSAttack):
    """Improved DLG (Zhao et al. 2020): label from the output layer's gradient, image by DLG."""

    name = "idlg"
    learn_labels = False
    Options = IDLGOptions
