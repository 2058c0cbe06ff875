r"""Tikhonov regularisation: :math:`\min_x \|Ax - y\|^2 + \alpha \|Lx\|^2`, i.e.
:math:`(A^T A + \alpha L^T L)\, x = A^T y`."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import torch
from deepinv.physics import LinearPhysics

from .._warnings import ConvergenceWarning
from ..operators import Blur, Gradient, Operator
from ..operators._base import check_tensor
from ..operators._check import verify_adjoint
from ..operators._norms import largest_eigenvalue
from ._io import as_alpha, as_measurement, as_start


@dataclasses.dataclass
class SolveInfo:
    """Convergence of a Tikhonov solve, per sample.

    Attributes
    ----------
    method : str
        ``"fft"`` (closed form) or ``"cg"``.
    iterations : torch.Tensor
        CG iterations each sample took (0 for the FFT path).
    residual : torch.Tensor
        Relative residual ``||A^T y - (A^T A + alpha L^T L) x|| / ||A^T y||``.
    converged : torch.Tensor
        Whether the residual reached the tolerance.
    """

    method: str
    iterations: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor


class _Identity(LinearPhysics):
    """``L = I`` (kept private: users pass ``regularizer="identity"``)."""

    def A(self, x, **kwargs):
        return x

    def A_adjoint(self, y, **kwargs):
        return y


def regularizer_operator(regularizer) -> LinearPhysics:
    """``"identity"``, ``"gradient"`` (circular finite differences) or a user's linear operator ``L``."""
    if isinstance(regularizer, str):
        if regularizer == "identity":
            return _Identity()
        if regularizer == "gradient":
            return Gradient(boundary="circular")
        raise ValueError(f"regularizer must be 'identity', 'gradient' or a LinearPhysics, got {regularizer!r}")
    if isinstance(regularizer, LinearPhysics):
        return regularizer
    raise TypeError(
        f"regularizer must be 'identity', 'gradient' or a deepinv LinearPhysics, got {type(regularizer).__name__}"
    )


def _per_sample(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (t.ndim - 1)))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _fft_symbols(op, reg, shape, dtype, device):
    """``(k^, |l^|^2)`` when ``A`` and ``L`` are both circular convolutions, else ``None``."""
    if not (isinstance(op, Blur) and op.boundary == "circular"):
        return None
    if isinstance(reg, _Identity):
        l_sq = torch.ones(shape, dtype=dtype, device=device)
    elif isinstance(reg, Gradient) and reg.boundary == "circular":
        l_sq = reg.transfer_function_sq(shape, dtype=dtype, device=device)
    elif isinstance(reg, Blur) and reg.boundary == "circular" and reg.image_shape == op.image_shape:
        l_sq = reg.transfer_function(dtype).to(device).abs() ** 2
    else:
        return None
    return op.transfer_function(dtype).to(device), l_sq


def conjugate_gradient(apply_normal, b: torch.Tensor, *, x0: torch.Tensor | None = None, tol: float = 1e-6,
                       max_iter: int = 500) -> tuple[torch.Tensor, SolveInfo]:
    """Batched conjugate gradients for a symmetric positive definite ``apply_normal``; each sample of the batch
    has its own step sizes and stops when its relative residual is below ``tol``."""
    b_norm = _dot(b, b).sqrt()
    zero = _per_sample(b, b_norm == 0)
    x = torch.zeros_like(b) if x0 is None else torch.where(zero, torch.zeros_like(x0), x0)  # b = 0 gives x = 0
    r = b - apply_normal(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _dot(r, r)
    b_norm = b_norm.clamp_min(torch.finfo(b.dtype).tiny)
    iterations = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
    for _ in range(max_iter):
        active = rs.sqrt() > tol * b_norm
        if not bool(active.any()):
            break
        ap = apply_normal(p)
        curvature = _dot(p, ap)
        step = torch.where(active, rs / curvature.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        x = x + _per_sample(x, step) * p
        r = r - _per_sample(r, step) * ap
        rs_new = _dot(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rs))
        p = torch.where(_per_sample(p, active), r + _per_sample(p, beta) * p, p)
        rs = torch.where(active, rs_new, rs)
        iterations += active.long()
    residual = (b - apply_normal(x)).flatten(1).norm(dim=1) / b_norm
    return x, SolveInfo("cg", iterations, residual, residual <= tol * 1.01)


class _Holder:
    """Where a solve leaves its :class:`SolveInfo`."""

    info: SolveInfo | None = None


class _NormalSolve(torch.autograd.Function):
    """``b -> (A^T A + alpha L^T L)^{-1} b``, the inner solve of Tikhonov, for every torch transform.

    The normal matrix is symmetric, so the backward pass and the forward-mode derivative are the same solve of
    the incoming vector (implicit differentiation, no unrolled CG; differentiable again); under ``torch.vmap``
    the mapped axis joins the batch of the solve, which is per sample anyway. ``holder.info`` receives the
    :class:`SolveInfo` of the forward solve (an object, not a dict: torch.func would copy a dict).
    """

    @staticmethod
    def forward(b, solver, x0, holder):
        x, info = solver.solve(None, x0=x0, adjoint_rhs=b)
        holder.info = info
        return x

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.solver = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return _NormalSolve.apply(grad.contiguous(), ctx.solver, None, _Holder()), None, None, None

    @staticmethod
    def jvp(ctx, b_dot, *_):
        return _NormalSolve.apply(b_dot, ctx.solver, None, _Holder())

    @staticmethod
    def vmap(info, in_dims, b, solver, x0, holder):
        mapped = info.batch_size

        def fold(t, dim):
            if t is None:
                return None
            t = t.expand(mapped, *t.shape) if dim is None else t.movedim(dim, 0)
            return t.reshape(-1, *t.shape[2:])  # (mapped * batch, ...)

        batch = b.shape[0] if in_dims[0] is None else b.movedim(in_dims[0], 0).shape[1]  # samples per map
        folded = copy.copy(solver)
        folded.alpha = as_alpha(solver.alpha, batch, torch.zeros((), dtype=torch.float64)).repeat(mapped)
        x = _NormalSolve.apply(fold(b, in_dims[0]), folded, fold(x0, in_dims[2]), holder)
        return x.reshape(mapped, batch, *x.shape[1:]), 0


class Tikhonov:
    r"""Tikhonov reconstructor :math:`R_\alpha y = (A^T A + \alpha L^T L)^{-1} A^T y`.

    Parameters
    ----------
    op : deepinv.physics.LinearPhysics
        Forward operator ``A``.
    alpha : float or tensor of shape (B,)
        Regularisation weight (> 0), one for all samples or one per sample.
    regularizer : {"identity", "gradient"} or LinearPhysics
        ``L``: identity, circular finite differences (:class:`invstable.operators.Gradient`), or any linear
        operator.
    tol, max_iter : float, int
        Relative residual tolerance and iteration cap of conjugate gradients (unused on the FFT path).

    Notes
    -----
    When ``A`` and ``L`` are circular convolutions (a circular :class:`~invstable.operators.Blur` with the
    identity or the circular gradient), the normal equations are diagonal in Fourier:
    :math:`\hat x = \overline{\hat k}\, \hat y / (|\hat k|^2 + \alpha |\hat l|^2)`. Otherwise they are solved
    by batched conjugate gradients, matrix-free.

    The map is linear in ``y``, so its Lipschitz constant is its spectral norm,
    :math:`\|R_\alpha\| = \max \sigma((A^T A + \alpha L^T L)^{-1} A^T)` (:meth:`lipschitz_bound`); for
    ``L = I`` it is :math:`\max_i \sigma_i / (\sigma_i^2 + \alpha) \le 1 / (2\sqrt\alpha)`.

    References
    ----------
    A. N. Tikhonov and V. Y. Arsenin, *Solutions of Ill-Posed Problems*, Winston, 1977.
    """

    def __init__(self, op, alpha, *, regularizer="identity", tol: float = 1e-6, max_iter: int = 500):
        if not isinstance(op, LinearPhysics):
            raise TypeError(f"op must be a deepinv LinearPhysics (see invstable.as_operator), got {type(op).__name__}")
        if not (tol > 0) or not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"tol must be > 0 and max_iter a positive int, got tol={tol!r}, max_iter={max_iter!r}")
        as_alpha(alpha, alpha.numel() if isinstance(alpha, torch.Tensor) else int(np.size(alpha)),
                 torch.zeros(()))  # validate now, not at the first call
        self.op = op
        self.alpha = alpha
        self.regularizer = regularizer_operator(regularizer)
        self.tol = tol
        self.max_iter = max_iter

    def __repr__(self) -> str:
        reg = "'identity'" if isinstance(self.regularizer, _Identity) else repr(self.regularizer)
        return f"Tikhonov(op={self.op!r}, alpha={self.alpha!r}, regularizer={reg})"

    def normal(self, alpha: torch.Tensor):
        """The map ``x -> A^T A x + alpha L^T L x`` (``alpha`` per sample)."""
        op, reg = self.op, self.regularizer

        def apply(x):
            return op.A_adjoint(op.A(x)) + _per_sample(x, alpha) * reg.A_adjoint(reg.A(x))

        return apply

    def solve(self, y: torch.Tensor, *, x0: torch.Tensor | None = None, adjoint_rhs: torch.Tensor | None = None):
        """Solve the normal equations for a batched tensor ``y`` (or for a given right-hand side ``A^T y``).

        Returns ``(x, SolveInfo)``.
        """
        b = self.op.A_adjoint(y) if adjoint_rhs is None else adjoint_rhs
        alpha = as_alpha(self.alpha, b.shape[0], b)
        # both maps must have exact adjoints, or the normal matrix is not symmetric (measured once per shape)
        verify_adjoint(self.op, in_shape=tuple(b.shape[1:]), dtype=b.dtype, device=b.device)
        if not isinstance(self.regularizer, (_Identity, Gradient)):
            verify_adjoint(self.regularizer, in_shape=tuple(b.shape[1:]), dtype=b.dtype, device=b.device,
                           name="regularizer")
        symbols = _fft_symbols(self.op, self.regularizer, b.shape[-2:], torch.float64 if b.dtype == torch.float64
                               else torch.float32, b.device)
        if b.numel() == 0:  # an empty batch: nothing to solve (the FFT refuses empty tensors)
            none = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
            return torch.zeros_like(b), SolveInfo("fft" if symbols is not None else "cg", none,
                                                  torch.zeros(b.shape[0], dtype=b.dtype, device=b.device),
                                                  torch.ones_like(none, dtype=torch.bool))
        if symbols is not None:
            k_hat, l_sq = symbols
            denom = k_hat.abs() ** 2 + _per_sample(b, alpha).to(l_sq.dtype) * l_sq
            if not bool((denom > 0).all()):
                raise ValueError(
                    "A^T A + alpha L^T L is singular: the kernel and the regularizer both vanish at some frequency "
                    "(e.g. a zero-mean kernel with the gradient regularizer); use regularizer='identity'"
                )
            x = torch.fft.ifft2(torch.fft.fft2(b.to(k_hat.real.dtype)) / denom).real.to(b.dtype)
            zero = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
            residual = (b - self.normal(alpha)(x)).flatten(1).norm(dim=1) / (
                b.flatten(1).norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny))
            return x, SolveInfo("fft", zero, residual, torch.ones_like(zero, dtype=torch.bool))
        if x0 is not None:
            check_tensor(x0, "x0")
            if x0.shape != b.shape:
                raise ValueError(f"x0 has shape {tuple(x0.shape)} but the reconstruction has shape {tuple(b.shape)}")
        return conjugate_gradient(self.normal(alpha), b, x0=x0, tol=self.tol, max_iter=self.max_iter)

    def __call__(self, y, *, x0=None, return_info: bool = False):
        """Reconstruct from ``y`` (torch, batched; or numpy, batch and channel axes optional).

        Differentiable in ``y``: when ``y`` requires grad, the gradient is :math:`R^T g = A (A^T A + \alpha
        L^T L)^{-1} g`, one more solve of the same system (implicit differentiation, no unrolled CG), so an
        adversarial search (:mod:`invstable.stability`) can attack Tikhonov like any network. The same holds
        under ``torch.func`` (``jvp``, ``vmap``, ``jacrev``). An empty batch gives an empty batch.

        The operator (and a regularizer given as an operator) must have an exact adjoint: it is measured once
        per operator and shape, and an :class:`~invstable.operators.AdjointMismatchError` refuses a wrong one.
        """
        t, restore = as_measurement(y, self.op)
        b = self.op.A_adjoint(t)  # differentiable in y (and under torch.func) when y is
        with torch.no_grad():
            x0_t = None if x0 is None else as_start(x0, tuple(b.shape), b.dtype)
        holder = _Holder()
        x = _NormalSolve.apply(b, self, x0_t, holder)
        info = holder.info
        if not bool(info.converged.all()):
            worst = float(info.residual.max())
            warnings.warn(
                f"Tikhonov CG stopped after {int(info.iterations.max())} iterations (max_iter={self.max_iter}) "
                f"with relative residual {worst:.2e} > tol {self.tol:.1e}; raise max_iter or alpha",
                ConvergenceWarning, stacklevel=2,
            )
        out = restore(x)
        return (out, info) if return_info else out

    def lipschitz_bound(self, y_shape: tuple | None = None, *, max_iter: int = 150, rtol: float = 1e-7) -> float:
        r"""Lipschitz constant of ``y -> R_alpha y``: its largest singular value.

        Exact on the FFT path; otherwise the largest eigenvalue of :math:`R^T R` by Lanczos iterations (the
        largest Ritz value, which approaches it from below, stopped when its residual bound is below ``rtol``) with
        accurate CG solves (tolerance 1e-9 in float64 where the operator allows it). ``y_shape`` is one batched measurement shape,
        e.g. ``(1, 1, 182, 30)``; it is derived for invstable's operators.
        """
        alpha = torch.as_tensor(self.alpha, dtype=torch.float64)
        if alpha.numel() != 1:
            raise ValueError("lipschitz_bound needs one alpha for all samples; build one Tikhonov per alpha")
        op, reg = self.op, self.regularizer
        if isinstance(op, Blur) and op.boundary == "circular":
            symbols = _fft_symbols(op, reg, op.image_shape, torch.float64, op.kernel.device)
            if symbols is not None:
                verify_adjoint(op, in_shape=(1, *op.image_shape), dtype=torch.float64)
                k_hat, l_sq = symbols
                denom = k_hat.abs() ** 2 + float(alpha) * l_sq
                if not bool((denom > 0).all()):
                    return math.inf  # singular normal equations: the map is unbounded
                return float((k_hat.abs() / denom).max())
        if y_shape is None:
            if not isinstance(op, Operator) or op.image_shape is None:
                raise ValueError(
                    f"pass y_shape (one batched measurement shape) for {type(op).__name__}, e.g. y.shape"
                )
            y_shape = op.measurement_shape((1, *op.image_shape))
        y_shape = tuple(int(n) for n in y_shape)
        if len(y_shape) < 2 or min(y_shape) < 1:
            raise ValueError(
                f"y_shape must be the shape of a batch of at least one measurement, e.g. (1, *y.shape[1:]), got "
                f"{y_shape}"
            )
        dtype = torch.float64
        try:
            op.A_adjoint(torch.zeros(y_shape, dtype=dtype))
        except (RuntimeError, TypeError):
            dtype = torch.float32
        verify_adjoint(op, y_shape=y_shape[1:], dtype=dtype)  # the constant of a wrong adjoint is not R's
        solver = Tikhonov(op, float(alpha), regularizer=reg, tol=1e-9 if dtype == torch.float64 else 1e-6,
                          max_iter=5000)
        a = torch.full((y_shape[0],), float(alpha), dtype=dtype)

        def gram(v: np.ndarray) -> np.ndarray:
            """v -> R^T R v, with R^T x = A (A^T A + alpha L^T L)^{-1} x."""
            with torch.no_grad():
                x, _ = solver.solve(torch.from_numpy(v.reshape(y_shape)).to(dtype))
                z, _ = conjugate_gradient(solver.normal(a), x, tol=solver.tol, max_iter=solver.max_iter)
                return op.A(z).double().numpy().reshape(-1)

        lam = largest_eigenvalue(gram, math.prod(y_shape), max_iter=max_iter, rtol=rtol)
        return math.sqrt(max(float(lam), 0.0))


def tikhonov(y, op, alpha, *, regularizer="identity", tol: float = 1e-6, max_iter: int = 500, x0=None,
             return_info: bool = False):
    r"""Tikhonov reconstruction :math:`\arg\min_x \|Ax - y\|^2 + \alpha \|Lx\|^2`.

    Parameters
    ----------
    y : torch.Tensor or numpy.ndarray
        Measurements. Torch: batched, as the operator produces them. Numpy: with or without the batch and
        channel axes; the result has the same leading axes.
    op : deepinv.physics.LinearPhysics
        Forward operator.
    alpha : float or array of shape (B,)
        Regularisation weight(s), > 0.
    regularizer : {"identity", "gradient"} or LinearPhysics, default "identity"
    tol : float, default 1e-6
        Relative residual at which CG stops.
    max_iter : int, default 500
        CG iteration cap (a :class:`RuntimeWarning` says when it is hit).
    x0 : array, optional
        Warm start for CG.
    return_info : bool, default False
        Also return a :class:`SolveInfo` (method, iterations, residual, converged per sample).

    Returns
    -------
    x : same kind as ``y``
    info : SolveInfo, only with ``return_info=True``

    Examples
    --------
    >>> import torch
    >>> from invstable.operators import Blur, gaussian_kernel
    >>> op = Blur(gaussian_kernel(1.0), 32)
    >>> x = torch.rand(1, 1, 32, 32)
    >>> x_hat, info = tikhonov(op.A(x), op, 1e-3, return_info=True)
    >>> info.method
    'fft'
    """
    return Tikhonov(op, alpha, regularizer=regularizer, tol=tol, max_iter=max_iter)(
        y, x0=x0, return_info=return_info)
