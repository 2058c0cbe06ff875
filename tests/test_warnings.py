"""A solver stopped at its iteration cap warns with ``invstable.ConvergenceWarning``, so that a caller filters the
capped solves by their class (never by the warning's text) and keeps every other warning."""

import warnings

import pytest
import torch

import invstable
from invstable.baselines import Tikhonov
from invstable.models import VariationalInverse
from invstable.nn import ConvexRidgeRegularizer
from invstable.operators import Blur, CallableOperator, ParallelBeamCT, check_operator, gaussian_kernel


def _capped_tikhonov():
    op = ParallelBeamCT(16, 9)
    y = op.A(torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)))
    return Tikhonov(op, 1e-6, max_iter=2)(y)


def _capped_power_iteration():
    w = torch.full((1, 32, 32), 0.985, dtype=torch.float64)
    w[0, 0, 0] = 1.0
    op = CallableOperator(lambda x: x * w, lambda y: y * w, (1, 32, 32), check=False)
    return check_operator(op, (1, 32, 32), max_iter=5)


def _capped_variational():
    op = Blur(gaussian_kernel(1.5), image_size=16).to(torch.float64)
    reg = ConvexRidgeRegularizer((1, 4), kernel_size=3, rng=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = VariationalInverse(reg, op, lam=0.3, strong_convexity=0.05, tol=1e-12, max_iter=2)
    return model(op.A(torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))))


@pytest.mark.parametrize("capped", [_capped_tikhonov, _capped_power_iteration, _capped_variational],
                         ids=["tikhonov-cg", "power-iteration", "variational"])
def test_a_capped_solve_warns_with_convergence_warning(capped):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capped()
    categories = [w.category for w in caught]
    assert invstable.ConvergenceWarning in categories, [str(w.message) for w in caught]
    with warnings.catch_warnings(record=True) as caught:  # filtered by its class, the capped solve is quiet
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", invstable.ConvergenceWarning)
        capped()
    assert invstable.ConvergenceWarning not in [w.category for w in caught]


def test_convergence_warning_is_a_runtime_warning():
    """Filters and tests written for the RuntimeWarning these warnings were before still apply."""
    assert issubclass(invstable.ConvergenceWarning, RuntimeWarning)
