"""The validation tuning of the baselines' weights: a log grid widened while its optimum sits at an end
(PROTOCOLS.md, "Tuning and training"), on synthetic scores whose optimum is known."""

import json
import math

import numpy as np
import pytest

from invstable.evaluation import _methods, _report
from invstable.evaluation._methods import same_tuning, tune_weight

GRID = np.logspace(-4, -2, 5)  # half a decade apart, like the TV grid


def parabola(best: float, calls: list | None = None):
    """A score with its maximum at ``best``: a parabola in log10(weight); ``calls`` collects the weights scored."""
    def score(v):
        if calls is not None:
            calls.append(v)
        return 30.0 - (math.log10(v) - math.log10(best)) ** 2
    return score


@pytest.mark.parametrize("best, end", [(3e-6, "lower"), (0.5, "upper")])
def test_a_grid_is_widened_past_the_end_where_the_optimum_sits_and_stops_inside(best, end):
    calls = []
    record = tune_weight(GRID, parabola(best, calls), points=2, max_widenings=10)
    grid = record["grid"]
    final = np.array(grid["final"])
    # the optimum found is inside the final grid, within half a grid step (a quarter decade) of the true one
    assert grid["at_end"] is None and not grid["limit_reached"]
    assert final[0] < record["value"] < final[-1]
    assert abs(math.log10(record["value"]) - math.log10(best)) <= 0.25 + 1e-9
    # widened only past that end, two points at a time at the grid's own log spacing, and no further than needed
    assert grid["widenings"] >= 1 and len(final) == len(GRID) + 2 * grid["widenings"]
    np.testing.assert_allclose(np.diff(np.log10(final)), 0.5, rtol=1e-9)
    if end == "lower":
        np.testing.assert_allclose(final[-1], GRID[-1])
        assert final[0] < GRID[0] and final[1] > best / 10 ** 0.5  # one more widening would have been one too many
    else:
        np.testing.assert_allclose(final[0], GRID[0])
        assert final[-1] > GRID[-1] and final[-2] < best * 10 ** 0.5
    # the record holds every weight scored, once each, sorted, with its score
    assert sorted(calls) == [v for v, _ in record["validation_psnr"]] and len(set(calls)) == len(calls)
    assert all(p == parabola(best)(v) for v, p in record["validation_psnr"])
    np.testing.assert_allclose(grid["initial"], GRID)


def test_an_interior_optimum_keeps_the_grid():
    calls = []
    record = tune_weight(GRID[::-1], parabola(1.2e-3, calls))  # any order in, sorted out
    assert record["grid"]["widenings"] == 0 and record["grid"]["final"] == sorted(GRID.tolist())
    assert len(calls) == len(GRID) and record["value"] == pytest.approx(1e-3)


def test_the_widening_stops_at_its_limit_and_says_so():
    calls = []
    record = tune_weight(GRID, parabola(1e-12, calls), points=2, max_widenings=3)
    grid = record["grid"]
    assert grid["widenings"] == 3 and grid["limit_reached"] and grid["at_end"] == "lower"
    assert len(calls) == len(GRID) + 3 * 2
    assert record["value"] == pytest.approx(GRID[0] / 10 ** 3) == grid["final"][0]
    # the report's note on weights at the end of their grid names the limit
    tuning = {"tv": {"lambda": record["value"], "validation_psnr": record["validation_psnr"], "grid": grid}}
    notes = _report._grid_edges(tuning)
    assert len(notes) == 2 and "lower end" in notes[0] and "3 widenings" in notes[0]


def test_refinement_halves_the_spacing_around_the_optimum_inside_the_grid():
    coarse = tune_weight(GRID, parabola(1.8e-3))
    fine = tune_weight(GRID, parabola(1.8e-3), refine=2)
    assert len(fine["validation_psnr"]) == len(coarse["validation_psnr"]) + 4
    assert abs(math.log10(fine["value"] / 1.8e-3)) < abs(math.log10(coarse["value"] / 1.8e-3))
    assert abs(math.log10(fine["value"] / 1.8e-3)) <= 0.5 / 8 + 1e-9
    assert fine["grid"]["final"] == coarse["grid"]["final"]  # refinements are not grid points


def test_a_failed_score_is_never_chosen():
    record = tune_weight(GRID, lambda v: math.nan if v == GRID[2] else -abs(math.log10(v / GRID[2])))
    assert record["value"] != GRID[2] and math.isfinite(record["score"])


@pytest.mark.parametrize("values, option, match", [([1e-3], {}, "at least two distinct positive"),
                                                   ([0.0, 1e-3], {}, "at least two distinct positive"),
                                                   ([1e-3, 1e-3], {}, "at least two distinct positive"),
                                                   (GRID, {"points": 0}, "points must be an integer >= 1"),
                                                   (GRID, {"max_widenings": -1}, "max_widenings must be"),
                                                   (GRID, {"refine": 1.5}, "refine must be")])
def test_bad_grids_and_options_are_refused(values, option, match):
    with pytest.raises(ValueError, match=match):
        tune_weight(values, parabola(1e-3), **option)


def _record(initial, best, refine):
    r = tune_weight(initial, parabola(best), refine=refine)
    return {"validation_psnr": r["validation_psnr"], "grid": r["grid"]}


def test_a_recorded_tuning_is_reused_only_when_made_the_same_way():
    tuning = {"n_validation": 32,
              "tikhonov_identity": {"alpha": 0.01, "max_iter": 500, **_record(_methods.ALPHAS, 1e-2, 1)},
              "tikhonov_gradient": {"alpha": 0.01, "max_iter": 500, **_record(_methods.ALPHAS, 1e-5, 1)},
              "tv": {"lambda": 1e-3, "max_iter": _methods.tv_max_iter("ct-180", False), "tol": _methods.TV_TOL,
                     "prox_iter": _methods.TV_PROX_ITER, "n_validation": _methods.TV_VALIDATION,
                     **_record(_methods.LAMBDAS, 1e-3, 0)}}
    tuning = json.loads(json.dumps(tuning))  # as read back from quality.json
    assert same_tuning(tuning, 32, False, "ct-180")
    assert not same_tuning(tuning, 16, False, "ct-180")  # other validation images
    old = json.loads(json.dumps(tuning))
    del old["tv"]["grid"]  # a record from before the grids were widened
    assert not same_tuning(old, 32, False, "ct-180")
    other = json.loads(json.dumps(tuning))
    other["tv"]["grid"]["max_widenings"] += 1
    assert not same_tuning(other, 32, False, "ct-180")
    other = json.loads(json.dumps(tuning))
    other["tv"]["tol"] = 1e-3
    assert not same_tuning(other, 32, False, "ct-180")
    other = json.loads(json.dumps(tuning))
    other["tv"]["prox_iter"] = 20  # the inexact proximal map of the records before
    assert not same_tuning(other, 32, False, "ct-180")
