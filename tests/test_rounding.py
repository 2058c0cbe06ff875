"""Certificates in floating point (issue 16, item 4): ||R(y1) - R(y2)|| <= certificate().bound(y1, y2) holds for
what the code computes, down to relative perturbations of 1e-7 in float32, where the plain Lipschitz bound does not."""

from __future__ import annotations

import pytest
import torch

from invstable.models import Certificate, UnrolledInverse, VariationalInverse
from invstable.nn import ConvexRidgeRegularizer
from invstable.operators import Blur, ParallelBeamCT, gaussian_kernel
from tests._nn_helpers import one_thread  # noqa: F401 (fixture)

SIZE = 32


def _norms(t):
    return t.detach().double().flatten(1).norm(dim=1)


def _unrolled(op, dtype=torch.float32, **kw):
    model = UnrolledInverse(op, iterations=2, channels=3, depth=1, image_shape=(1, SIZE, SIZE), **kw)
    return model.to(dtype).eval()


def _case(name):
    """(model, measurements): tiny models on 32 x 32 images, measurements of random images with noise."""
    gen = torch.Generator().manual_seed(1)
    if name == "ct default":
        op = ParallelBeamCT(image_size=SIZE, angles=30)
        model = _unrolled(op)
    elif name == "blur alpha 1e-4 degree 200":  # the case of the issue: a first guess with a long recurrence
        op = Blur(gaussian_kernel(2.0), image_size=SIZE)
        model = _unrolled(op, init_alpha=1e-4, init_degree=200)
    else:
        op = Blur(gaussian_kernel(1.5), image_size=SIZE)
        reg = ConvexRidgeRegularizer((1, 4, 8), kernel_size=3, knots=11)
        model = VariationalInverse(reg, op, lam=0.05, strong_convexity=1e-2, tol=1e-3, image_shape=(1, SIZE, SIZE))
    x = torch.rand(3, 1, SIZE, SIZE, generator=gen)
    with torch.no_grad():
        y = op.A(x)
    noise = torch.randn(y.shape, generator=gen) * (0.01 * _norms(y).float() / y[0].numel() ** 0.5).view(-1, 1, 1, 1)
    return model, y + noise


def _pairs(y, etas, draws, gen):
    """(y, y + d) with ||d|| = eta ||y|| for each eta, ``draws`` random directions each."""
    for eta in etas:
        for _ in range(draws):
            d = torch.randn(y.shape, generator=gen, dtype=y.dtype)
            yield y + d * (eta * _norms(y) / _norms(d)).to(y.dtype).view((-1,) + (1,) * (y.ndim - 1))


CASES = ["ct default", "blur alpha 1e-4 degree 200", "variational"]


@pytest.mark.parametrize("name", CASES)
def test_certified_bound_holds_at_tiny_relative_perturbations_in_float32(one_thread, name):
    model, y = _case(name)
    gen = torch.Generator().manual_seed(7)
    worst_ratio, worst_share = 0.0, 0.0
    with torch.no_grad():
        base = model(y)
        cert = model.certificate()  # after the solves: a variational model's term includes the last solve's
        assert cert.dtype == torch.float32 and cert.lipschitz == model.lipschitz_bound()
        for y2 in _pairs(y, (1e-6, 1e-7), 3, gen):
            out = model(y2)
            cert = model.certificate()
            change = _norms(out - base)
            assert bool((change <= cert.bound(y, y2)).all()), (change, cert.bound(y, y2), cert)
            worst_share = max(worst_share, float((change / cert.bound(y, y2)).max()))
            worst_ratio = max(worst_ratio, float((change / _norms(y2 - y)).max()))
        # the smallest perturbation there is: one ulp in one entry (the plain ratio is then almost all rounding)
        flat = y.flatten(1)
        y2 = flat.clone()
        y2[:, 0] = torch.nextafter(flat[:, 0], torch.full_like(flat[:, 0], float("inf")))
        y2 = y2.view_as(y)
        change = _norms(model(y2) - base)
        assert bool((change <= model.certificate().bound(y, y2)).all())
        # larger inputs have larger rounding errors: the term scales with ||y||
        for y2 in _pairs(10 * y, (1e-6,), 2, gen):
            change = _norms(model(y2) - model(10 * y))
            assert bool((change <= model.certificate().bound(10 * y, y2)).all())
    assert worst_share > 0  # the outputs did move: the check above was not vacuous
    if name != "variational":
        # (b) the plain Lipschitz bound does not hold for what float32 computes at these sizes: the term is needed
        assert worst_ratio > cert.lipschitz, (worst_ratio, cert.lipschitz)
        assert cert.additive == 0 and cert.rounding > 0


def test_rounding_term_in_float64_is_far_smaller_and_holds_at_1e_12():
    model, y = _case("blur alpha 1e-4 degree 200")
    c32 = model.certificate(torch.float32)
    model = model.double()
    y = y.double()
    c64 = model.certificate()
    assert c64.dtype == torch.float64
    assert 0 < c64.rounding < 1e-6 * c32.rounding
    gen = torch.Generator().manual_seed(3)
    worst = 0.0
    with torch.no_grad():
        base = model(y)
        for y2 in _pairs(y, (1e-12, 1e-13), 3, gen):
            change = _norms(model(y2) - base)
            assert bool((change <= c64.bound(y, y2)).all()), (change, c64.bound(y, y2))
            worst = max(worst, float((change / _norms(y2 - y)).max()))
    assert worst > 0


def test_measurement_is_cached_and_follows_the_weights(one_thread, monkeypatch):
    model, y = _case("ct default")
    calls = []
    measure = UnrolledInverse._measure_rounding

    def counted(self, *args, **kw):
        calls.append(1)
        return measure(self, *args, **kw)

    monkeypatch.setattr(UnrolledInverse, "_measure_rounding", counted)
    first = model.certificate()
    assert model.certificate() == first and len(calls) == 1
    assert model.certificate(torch.float64).rounding < first.rounding and len(calls) == 1  # scaled, not re-measured
    with torch.no_grad():
        model.step_logits.add_(0.5)
    model.certificate()
    assert len(calls) == 2
    # extra probes (e.g. validation measurements) can only raise the measured rate
    assert model.certificate(probes=y).rounding >= model.certificate().rounding


def test_bound_refuses_other_dtypes_and_shapes():
    cert = Certificate(2.0, 0.0, 1e-6, 0.0, torch.float32)
    y = torch.ones(2, 1, 4, 4)
    with pytest.raises(ValueError, match="holds for torch.float32"):
        cert.bound(y.double(), y.double())
    with pytest.raises(ValueError, match="one shape"):
        cert.bound(y, y[:1])
    b = cert.bound(y, 2 * y)
    assert b.shape == (2,) and torch.allclose(b, torch.full((2,), 2.0 * 4 + 1e-6 * 12, dtype=torch.float64))
    model, _ = _case("ct default")
    with pytest.raises(ValueError, match="float32 and float64|measured for"):
        model.certificate(torch.float16)


def test_stability_protocol_counts_violations_against_the_floating_point_certificate(one_thread):
    """At eta = 1e-6 the plain ratio of a float32 model exceeds its Lipschitz bound; the protocol's count of
    violations uses the certificate with its rounding term (none), and records the term and the resolution."""
    from invstable.evaluation._methods import Method
    from invstable.evaluation._stability import evaluate_method

    model, y = _case("blur alpha 1e-4 degree 200")
    x = torch.zeros(y.shape[0], 1, SIZE, SIZE)  # the truth only enters the PSNR figures
    method = Method("tiny", "learned", model, model.lipschitz_bound, "certified", {}, module=model)
    settings = {"etas": [1e-6, 1e-3], "steps": 2, "restarts": 1}
    row = evaluate_method(method, x, y, settings)
    assert row["empirical_lipschitz"] > row["lipschitz_bound"]  # the plain comparison would report violations
    assert row["violations"] == 0
    rounding = row["rounding"]
    assert rounding["dtype"] == "float32" and rounding["rate"] == model.certificate().rounding
    assert rounding["etas_below_resolution"] == [1e-6]  # below 100 float32 epsilons (1.2e-5): flagged
    # no ratio above L: nothing to measure, the plain bound decides, the levels are still flagged
    from invstable.models._certificate import rounding_allowance
    allowed, record = rounding_allowance(model, 100.0, [1e-6, 1e-3], [1.0, 2.0])
    assert allowed == 100.0 and record["rate"] is None and record["etas_below_resolution"] == [1e-6]
    assert rounding_allowance(lambda t: t, 100.0, [1e-6], [200.0]) == (100.0, None)  # no certificate: plain


def test_the_allowance_adds_a_solvers_additive_term_at_the_largest_measurement():
    from invstable.models import Certificate
    from invstable.models._certificate import rounding_allowance

    class Solver(torch.nn.Module):  # a certificate with a solver's additive term and no rounding
        def certificate(self):
            return Certificate(10.0, 2.0, 0.0, 0.0, torch.float32)

    # ratios at two levels, one per level; ||y|| <= 100: ||d|| <= eta 100, so the term allows at least 2 / (eta 100)
    allowed, record = rounding_allowance(Solver(), 10.0, [0.01, 0.05], [11.0, 10.2], largest_measurement=100.0)
    assert allowed.tolist() == pytest.approx([10.0 + 2.0, 10.0 + 0.4]) and record["additive"] == 2.0
    assert (11.0 <= allowed[0]) and (10.2 <= allowed[1])  # within L ||d|| + 2: not violations
    plain, _ = rounding_allowance(Solver(), 10.0, [0.01, 0.05], [11.0, 10.2])  # without ||y||: counted
    assert plain.tolist() == [10.0, 10.0]


def test_check_certificate_reads_ratios_with_the_rounding_term_and_flags_tiny_perturbations(one_thread):
    from invstable.stability import check_certificate

    model, y = _case("ct default")
    gen = torch.Generator().manual_seed(11)
    tiny = next(_pairs(y, (1e-7,), 1, gen))
    large = next(_pairs(y, (1e-2,), 1, gen))
    near = check_certificate(model, y, tiny)
    assert bool(near.below_resolution.all()) and not bool(near.violation.any())
    assert float(near.ratio.max()) > model.lipschitz_bound()  # read against L alone this would be a "violation"
    assert bool((near.ratio <= near.allowed).all())
    far = check_certificate(model, y, large)
    assert not bool(far.below_resolution.any()) and not bool(far.violation.any())
    assert float(far.allowed.max()) < 1.01 * model.lipschitz_bound()  # far from the resolution the term is small
    # a certificate that leaves the rounding out is caught on the near pair
    from invstable.models import Certificate
    plain = check_certificate(model, y, tiny, certificate=Certificate(model.lipschitz_bound(), dtype=torch.float32))
    assert bool(plain.violation.any())
    with pytest.raises(TypeError, match="no certificate"):
        check_certificate(lambda t: t, y, tiny)
    with pytest.raises(ValueError, match="identical"):
        check_certificate(model, y, y.clone())


def test_learned_filter_both_paths_within_the_certificate(one_thread):
    """A learned first guess runs as a weighted Chebyshev basis without autograd and by Clenshaw's recurrence with
    it (a stability search); their rounding differs and the certificate covers both."""
    op = Blur(gaussian_kernel(2.0), image_size=SIZE)
    model = _unrolled(op, init="learned", init_alpha=1e-3, init_degree=60)
    gen = torch.Generator().manual_seed(5)
    y = op.A(torch.rand(2, 1, SIZE, SIZE, generator=gen))
    cert = model.certificate()
    for y2 in _pairs(y, (1e-6,), 2, gen):
        with torch.no_grad():
            plain = _norms(model(y2) - model(y))
        graded = _norms(model(y2.clone().requires_grad_()) - model(y.clone().requires_grad_()))
        assert bool((plain <= cert.bound(y, y2)).all()) and bool((graded <= cert.bound(y, y2)).all())
