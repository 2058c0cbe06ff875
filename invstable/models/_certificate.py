r"""Certificates of learned reconstructions, in floating point: a Lipschitz constant, a solver term and a rounding term.

A model certifies a map :math:`R` that it computes only approximately: the code returns
:math:`\hat R(y) = R(y) + e(y)` with :math:`e` the floating-point rounding (and, for an iterative solver, the
distance to the exact solution). For any two measurements

.. math::

    \|\hat R(y_1) - \hat R(y_2)\| \le L \|y_1 - y_2\| + \|e(y_1)\| + \|e(y_2)\|,

so a certificate that bounds :math:`\|e(y)\| \le \epsilon_{\mathrm{solve}} + \rho \|y\| + \epsilon_0` holds for what
the code computes: :meth:`Certificate.bound`. ``rho`` and ``epsilon_0`` are *measured*
(:func:`measure_rounding`: the largest error against the same model run in float64, over many inputs, times a
safety factor), not proven; docs/models.md ("Certificates in floating point") says how and gives figures.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

#: the rounding term is measured for these dtypes (float64 by scaling the float32 measurement with the unit roundoff)
DTYPES = (torch.float32, torch.float64)
#: the measured rounding error is multiplied by this before it enters a certificate
SAFETY = 4.0
#: a perturbation whose relative size ||d|| / ||y|| is below this many machine epsilons of the dtype is flagged:
#: at that size the rounding term dominates the bound and the plain ratio says nothing about the model
RESOLUTION_EPS = 100.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating-point dtype (``2**-24`` for float32, ``2**-53`` for float64)."""
    return torch.finfo(dtype).eps / 2


def resolution(dtype: torch.dtype) -> float:
    """Relative perturbation size below which a pair is flagged (:data:`RESOLUTION_EPS` machine epsilons)."""
    return RESOLUTION_EPS * torch.finfo(dtype).eps


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double().flatten(1).norm(dim=1)


@dataclasses.dataclass(frozen=True)
class Certificate:
    r"""``||R(y1) - R(y2)|| <= lipschitz ||y1 - y2|| + additive + rounding (||y1|| + ||y2||) + 2 rounding_floor``
    per sample, for what the model returns in ``dtype``.

    Attributes
    ----------
    lipschitz : float
        Certified Lipschitz constant of the exact map (``model.lipschitz_bound()``).
    additive : float
        Solver term: twice the certified distance of a returned image to the exact solution (0 for a model that
        computes its map in a fixed number of operations).
    rounding : float
        ``rho``: measured rate of the rounding error, ``||e(y)|| <= rho ||y|| + rounding_floor`` in ``dtype``.
    rounding_floor : float
        ``epsilon_0``: the part of the rounding error that does not scale with ``y`` (biases, a grey level).
    dtype : torch.dtype or None
        The dtype the rounding term holds for (None: no rounding term was measured).
    """

    lipschitz: float
    additive: float = 0.0
    rounding: float = 0.0
    rounding_floor: float = 0.0
    dtype: torch.dtype | None = None

    def bound(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        """Per-sample certified bound on ``||R(y1) - R(y2)||`` (float64 tensor of shape ``(B,)``).

        ``y1`` and ``y2`` are batched measurements of the same shape, in the certificate's ``dtype``.

        Raises
        ------
        ValueError
            If the shapes differ or the measurements are in another dtype than the rounding term holds for.
        """
        if not isinstance(y1, torch.Tensor) or not isinstance(y2, torch.Tensor) or y1.shape != y2.shape:
            raise ValueError(f"y1 and y2 must be batched tensors of one shape, got "
                             f"{tuple(getattr(y1, 'shape', ()))} and {tuple(getattr(y2, 'shape', ()))}")
        if y1.ndim < 2:
            raise ValueError(f"y1 and y2 must be batched (B, ...), got shape {tuple(y1.shape)}; add the batch axis")
        if self.dtype is not None and (y1.dtype != self.dtype or y2.dtype != self.dtype):
            raise ValueError(f"this certificate's rounding term holds for {self.dtype}, but the measurements are "
                             f"{y1.dtype} and {y2.dtype}; call model.certificate(dtype={y1.dtype}) (or run the model "
                             f"in {self.dtype})")
        n1, n2 = _norms(y1), _norms(y2)
        return (self.lipschitz * _norms(y1.double() - y2.double()) + self.additive
                + self.rounding * (n1 + n2) + 2 * self.rounding_floor)

    def ratio_bound(self, y1: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
        """:meth:`bound` divided by ``||y1 - y2||``: the largest ratio ``||R(y1) - R(y2)|| / ||y1 - y2||`` the
        certificate allows for this pair (``inf`` where ``y1 == y2``)."""
        d = _norms(y1.double() - y2.double())
        b = self.bound(y1, y2)
        return torch.where(d > 0, b / d.clamp_min(1e-300), torch.full_like(b, math.inf))


def measure_rounding(run: Callable[[torch.Tensor], torch.Tensor], reference: Callable[[torch.Tensor], torch.Tensor],
                     probes: list[torch.Tensor], *, excess: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     safety: float = SAFETY) -> tuple[float, float]:
    r"""``(rho, epsilon_0)``: the rounding error of ``run`` against ``reference``, per unit of ``||y||`` and at
    ``y = 0``, each times ``safety``.

    ``run`` is the model in the dtype to certify, ``reference`` the same model in float64; ``probes`` are
    batches of measurements in float64 (``run`` receives them rounded to its dtype, which is part of its error).
    ``excess``, when given, maps the per-sample error to the part the certificate does not already hold (a
    solver's certified distance subtracted). :math:`\rho = s \max_y \|e(y)\| / \|y\|` over the non-zero probes,
    :math:`\epsilon_0 = s \|e(0)\|` on the first probe's shape.
    """
    rate = 0.0
    with torch.no_grad():
        for y in probes:
            err = _norms(run(y) - reference(y))
            if excess is not None:
                err = excess(err).clamp_min(0)
            ny = _norms(y)
            keep = ny > 0
            if bool(keep.any()):
                rate = max(rate, float((err[keep] / ny[keep]).max()))
        zero = torch.zeros_like(probes[0][:1])
        err0 = _norms(run(zero) - reference(zero))
        if excess is not None:
            err0 = excess(err0).clamp_min(0)
    return safety * rate, safety * float(err0.max())


def rounding_allowance(reconstructor, bound: float, etas, ratios, *, largest_measurement: float | None = None):
    r"""``(allowed, record)``: the largest ratio :math:`\|R(y + d) - R(y)\| / \|d\|` the floating-point
    certificate of ``reconstructor`` allows for each of the ``ratios`` measured at the relative levels ``etas``
    (``len(ratios) / len(etas)`` ratios per level, in the order of ``etas``), and what was used.

    With :math:`\|d\| \le \eta \|y\|` and :math:`\|y + d\| \ge (1 - \eta)\|y\|`, :meth:`Certificate.bound`
    allows at least :math:`L + \rho (2 - \eta) / \eta`; with ``largest_measurement`` (the largest :math:`\|y\|`
    of the images), a solver's additive term :math:`a` adds at least :math:`a / (\eta \max \|y\|)`. What is
    left out only adds to the allowance, so leaving it out counts a violation too many rather than one too few. ``allowed`` is ``bound`` and ``record`` None when the
    reconstructor has no ``certificate()`` (a plain callable, a baseline). The certificate's rounding term is
    measured (``reconstructor.certificate()``, cached, seconds to minutes) only when a ratio exceeds ``bound``;
    ``record`` holds it (``rate``: None when not needed), the dtype, its resolution and the levels below it,
    where the rounding term dominates and a ratio says little.
    """
    import numpy as np  # noqa: PLC0415 (only the evaluation reads ratios as arrays)

    certificate = getattr(reconstructor, "certificate", None)
    if not callable(certificate) or not math.isfinite(bound):
        return bound, None
    ratios = np.asarray(ratios, dtype=float)
    etas = np.asarray(list(etas), dtype=float)
    if ratios.size % len(etas):
        raise ValueError(f"{ratios.size} ratios cannot be split evenly over the {len(etas)} levels {etas.tolist()}")
    floats = {p.dtype for p in getattr(reconstructor, "parameters", lambda: [])() if p.dtype in DTYPES}
    dtype = torch.float32 if torch.float32 in floats or not floats else torch.float64  # the lowest precision
    record = {"rate": None, "floor": None, "dtype": str(dtype).replace("torch.", ""), "resolution": resolution(dtype),
              "etas_below_resolution": [float(e) for e in etas if e < resolution(dtype)]}
    if not bool((ratios > bound).any()):
        return bound, record
    cert = certificate()  # measured once per model and cached
    if not isinstance(cert, Certificate) or cert.dtype is None:
        return bound, None
    record.update(rate=cert.rounding, floor=cert.rounding_floor, dtype=str(cert.dtype).replace("torch.", ""),
                  resolution=resolution(cert.dtype),
                  etas_below_resolution=[float(e) for e in etas if e < resolution(cert.dtype)])
    eta = np.repeat(etas, ratios.size // len(etas))
    allowed = bound + cert.rounding * (2 - eta) / eta
    if largest_measurement is not None and cert.additive > 0:
        allowed = allowed + cert.additive / (eta * float(largest_measurement))
        record["additive"] = cert.additive
    return allowed, record
