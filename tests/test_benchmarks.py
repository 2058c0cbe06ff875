"""Smoke tests of the benchmarks (invstable.evaluation, run through the thin scripts of benchmarks/): each benchmark
at a tiny size, its JSON schema, every method present, the page.

No test asserts a timing. The sizes are far below the protocol's: these tests check the plumbing, the
benchmarks themselves make the figures.
"""

import json
import math

import pytest
import torch

from benchmarks import quality, report, speed, stability
from benchmarks._common import RESULTS
from invstable import evaluation, list_models
from invstable.cli import main as cli_main
from invstable.data import task as get_task
from invstable.evaluation import PEER_RECIPE as RECIPE
from invstable.evaluation import _methods, _quality, _report, _speed, _stability
from invstable.evaluation import learned, load_peer, train_peer
from invstable.evaluation import peer_weights_path as weights_path

TASK = "ct-30"


def _expected_methods(with_ramp=True):
    names = ["FBP (Hann)", "Tikhonov (identity, validation alpha)", "Tikhonov (gradient, validation alpha)",
             "TV (validation lambda)", "deepinv unrolled PGD + DnCNN"]
    names += [m for m in list_models() if m.startswith("ct30-")]
    return names + (["FBP (Ramp)"] if with_ramp else [])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # tiny solver budgets at the quick size (the plumbing is under test, not the reconstructions)
    saved = dict(_methods.ITERATIONS)
    _methods.ITERATIONS[True] = (20, 3)
    yield tmp_path_factory.mktemp("bench")
    _methods.ITERATIONS.update(saved)


def test_the_peer_weights_are_shipped_and_load_without_code():
    for task in RECIPE:
        model, record = load_peer(task, weights_path(task, RESULTS))
        assert record["task"] == task and record["recipe"]["steps"] == RECIPE[task]["steps"]
        assert math.isfinite(record["validation_psnr"])
        assert sum(p.numel() for p in model.parameters()) < 20_000  # sized like invstable's models


def test_peer_training_writes_loadable_weights_and_refuses_foreign_files(tmp_path):
    record = train_peer("blur-g2", steps=2, out=tmp_path, threads=1, validation_count=2, log=lambda *_: None)
    model, meta = load_peer("blur-g2", weights_path("blur-g2", tmp_path))
    assert meta["best_step"] == record["best_step"] and meta["recipe"]["steps"] == 2
    with pytest.raises(ValueError, match="not deepinv-peer weights for 'ct-30'"):
        load_peer("ct-30", weights_path("blur-g2", tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.peer --task ct-30"):
        load_peer("ct-30", tmp_path / "absent.safetensors")


def test_peer_training_split_over_two_runs_is_the_uninterrupted_run(tmp_path):
    quiet = {"steps": 3, "threads": 1, "validation_count": 2, "log": lambda *_: None}
    whole = train_peer("blur-g2", out=tmp_path / "whole", checkpoint=tmp_path / "whole.pt", **quiet)
    first = train_peer("blur-g2", out=tmp_path / "split", checkpoint=tmp_path / "split.pt", until=1, **quiet)
    assert not first["complete"] and not weights_path("blur-g2", tmp_path / "split").exists()
    second = train_peer("blur-g2", out=tmp_path / "split", checkpoint=tmp_path / "split.pt", resume=True, **quiet)
    assert whole["complete"] and second["complete"] and second["validation_psnr"] == whole["validation_psnr"]
    a, _ = load_peer("blur-g2", weights_path("blur-g2", tmp_path / "whole"))
    b, _ = load_peer("blur-g2", weights_path("blur-g2", tmp_path / "split"))
    for (name, u), (_, v) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(u, v), name
    with pytest.raises(ValueError, match="checkpoint of another run"):
        train_peer("blur-g2", out=tmp_path, checkpoint=tmp_path / "split.pt", resume=True, **{**quiet, "steps": 4})
    with pytest.raises(FileNotFoundError, match="no peer checkpoint"):
        train_peer("blur-g2", out=tmp_path, checkpoint=tmp_path / "absent.pt", resume=True, **quiet)


def test_quality_smoke(results):
    payload = quality.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, n_val=2, n_test=2,
                          log=lambda *_: None)
    on_disk = json.loads((results / "quality.json").read_text())
    assert on_disk["complete"] and on_disk["tasks"][0]["task"] == TASK and on_disk == json.loads(json.dumps(payload))
    rows = {r["method"]: r for r in on_disk["tasks"][0]["rows"]}
    for name in _expected_methods() + ["Tikhonov (identity, discrepancy)", "Tikhonov (gradient, discrepancy)"]:
        assert name in rows, name
    for r in rows.values():
        assert r["n"] == 2 and {"psnr_mean", "psnr_std", "ssim_mean", "relative_error_mean", "kind"} <= set(r)
    assert rows["ct30-gradflow"]["bound_kind"] == "certified" and math.isfinite(rows["ct30-gradflow"]["lipschitz_bound"])
    assert {t["target"] for t in on_disk["tasks"][0]["targets"]} >= {"above best Tikhonov by >= 6 dB"}
    assert (results / "quality.png").stat().st_size > 0
    assert set(on_disk["environment"]) >= {"machine", "device", "torch", "threads", "git_commit", "date"}
    assert on_disk["tasks"][0]["measured_at"] == on_disk["environment"]["git_commit"]


def test_quality_resume_keeps_tasks_of_the_same_size_only(results, monkeypatch):
    before = json.loads((results / "quality.json").read_text())["tasks"][0]
    calls = []

    def evaluate(name, **_):
        calls.append(name)
        raise RuntimeError("evaluated afresh")
    monkeypatch.setattr(_quality, "evaluate_task", evaluate)
    with pytest.raises(RuntimeError, match="afresh"):  # another validation size: not kept
        quality.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, n_val=3, n_test=2, resume=True,
                    log=lambda *_: None)
    assert calls == [TASK]
    (results / "quality_panels.npz").unlink()  # kept tasks without panels recompute them on one image
    quality.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, n_val=2, n_test=2, resume=True,
                log=lambda *_: None)
    assert calls == [TASK]
    after = json.loads((results / "quality.json").read_text())["tasks"][0]
    assert {k: v for k, v in after.items() if k != "measured_at"} == {k: v for k, v in before.items()
                                                                        if k != "measured_at"}
    with __import__("numpy").load(results / "quality_panels.npz", allow_pickle=False) as z:
        assert f"{TASK}/truth" in z.files and f"{TASK}/method/ct30-gradflow" in z.files
    # named models (here the deepinv peer) are measured into a task tuned otherwise: kept, and marked so; a
    # sentinel in the kept peer row shows that the row is measured again, not carried over
    stored = json.loads((results / "quality.json").read_text())
    next(r for r in stored["tasks"][0]["rows"] if r["kind"] == "peer")["psnr_mean"] = -1.0
    (results / "quality.json").write_text(json.dumps(stored))
    payload = quality.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, n_val=3, n_test=2, resume=True,
                          models=["peer"], log=lambda *_: None, reference_dir=RESULTS)
    assert calls == [TASK]
    (task,) = payload["tasks"]
    assert task["earlier_tuning"] and "tuned with the grids and solver budgets of the run" in "\n".join(
        _report.quality_section(payload, ".", results))
    peer_row = next(r for r in task["rows"] if r["kind"] == "peer")
    assert peer_row["measured_at"] == payload["environment"]["git_commit"] and peer_row["steps"] > 0
    assert peer_row["psnr_mean"] > 0  # the sentinel is gone: measured again


#: every method of the stability run but the universal regulariser (minutes per search step on CT-30: its own
#: test below)
SMOKE_METHODS = sorted(set(_expected_methods(with_ramp=False)) - set(_stability.SKIPPED))


def test_stability_smoke(results):
    payload = stability.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, images=1, steps=2,
                            restarts=1, etas=[0.05], validation=2, log=lambda *_: None, methods=SMOKE_METHODS)
    on_disk = json.loads((results / "stability.json").read_text())
    assert on_disk["complete"] and not on_disk["settings"]["protocol"]
    methods = {m["method"]: m for m in on_disk["tasks"][0]["methods"]}
    assert set(_expected_methods(with_ramp=False)) - set(_stability.SKIPPED) <= set(methods)
    for m in methods.values():
        assert [e["eta"] for e in m["per_eta"]] == [0.05]
        assert m["pairs_checked"] == 3 and m["empirical_lipschitz"] > 0  # random + the two searches, 1 image
        if m["bound_kind"] == "certified":
            assert m["violations"] == 0 and m["empirical_lipschitz"] <= m["lipschitz_bound"]
    assert methods["TV (validation lambda)"]["attack"].startswith("direct (unrolled TV")
    assert "sources" in methods["TV (validation lambda)"]["per_eta"][0]  # direct and transfer, both kept
    assert (results / f"stability_{TASK}.png").stat().st_size > 0
    assert methods["ct30-gradflow"]["attack"] == "search on this method"
    assert on_disk["tasks"][0]["targets"][0]["target"] == "zero certificate violations"
    assert (results / "stability.png").stat().st_size > 0 and payload["complete"]


def test_stability_resume_keeps_measured_methods(results, monkeypatch):
    # same settings as the smoke run: nothing is measured again
    calls, tunings = [], []
    monkeypatch.setattr(_stability, "evaluate_method", lambda *a, **k: calls.append(a[0].name))
    real_baselines = _stability.baselines
    monkeypatch.setattr(_stability, "baselines", lambda *a, **k: tunings.append(k["n_val"]) or real_baselines(*a, **k))
    stability.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, images=1, steps=2, restarts=1,
                  etas=[0.05], validation=2, resume=True, log=lambda *_: None, methods=SMOKE_METHODS)
    assert tunings == [0]  # no baseline is measured again: their weights are not tuned again either
    assert calls == []
    # one method named: the others measured with these settings are kept, nothing else is run
    payload = stability.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, images=1, steps=2,
                            restarts=1, etas=[0.05], validation=2, resume=True, log=lambda *_: None,
                            methods=["ct30-gradflow"])
    assert calls == [] and {m["method"] for m in payload["tasks"][0]["methods"]} == set(SMOKE_METHODS)
    assert "--methods ct30-gradflow" in payload["command"]
    # another task alone: the task of the earlier run is kept as it was
    monkeypatch.undo()
    other = stability.run(quick=True, tasks=("blur-g2",), results_dir=results, threads=2, images=1, steps=2,
                          restarts=1, etas=[0.05], validation=2, resume=True, log=lambda *_: None,
                          methods=["Tikhonov (identity, validation alpha)"])
    assert [t["task"] for t in other["tasks"]] == [TASK, "blur-g2"]
    assert other["tasks"][0]["methods"] == payload["tasks"][0]["methods"]
    with pytest.raises(ValueError, match=r"no method \['nope'\] in the stability protocol of ct-30"):
        stability.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, images=1, steps=2, restarts=1,
                      etas=[0.05], validation=2, resume=True, log=lambda *_: None, methods=["nope"])


def test_the_universal_regulariser_is_a_certified_stability_method_attacked_warm():
    torch.set_num_threads(2)
    from invstable.models._io import load_regularizer
    from invstable.models._pretrained import _resolve

    assert set(_methods.UNIVERSAL_PRESETS) == set(load_regularizer(_resolve("universal"))[1]["presets"])
    assert _methods.universal("ct-180") == []  # no preset shipped for it
    (method,) = _methods.universal("blur-g2")
    assert method.bound_kind == "certified" and method.bound() == pytest.approx(10.0, rel=1e-4)
    spec = get_task("blur-g2")
    _, y = spec.pairs("test")[0]
    y = y[None]
    with torch.no_grad():
        x0 = method.reconstruct(y)
    d = 0.01 * y.norm() * torch.randn_like(y) / y.numel() ** 0.5
    yd = (y + d).requires_grad_(True)
    warm = method.warm(yd, x0)  # the search's looser copy started at R(y): the same minimiser within both tolerances
    with torch.no_grad():
        cold = method.reconstruct(y + d)
    tol = (method.extra["tol"] + method.extra["search"]["tol"]) * y.shape[-1]  # each solve's certified distance
    assert float((warm.detach() - cold).norm()) <= tol
    warm.pow(2).sum().backward()  # implicit derivative reaches y
    assert yd.grad is not None and float(yd.grad.norm()) > 0


def test_stability_figures_with_tasks_of_different_method_counts(tmp_path):
    import numpy as np

    def task(n_methods):
        rows = [{"method": f"m{i}", "per_eta": [{"eta": 0.05, "adversarial_x_psnr": {"mean": 20.0},
                                                  "random_psnr": {"mean": 25.0}}],
                 "empirical_lipschitz": 1.0, "lipschitz_bound": 2.0} for i in range(n_methods)]
        return {"task": f"t{n_methods}", "methods": rows, "_truth": np.zeros((4, 4)),
                "_examples": {r["method"]: {"image": np.ones((4, 4))} for r in rows}}
    _stability._figure([task(3), task(1)], tmp_path)
    assert (tmp_path / "stability.png").stat().st_size > 0 and (tmp_path / "stability_examples.png").stat().st_size > 0


def test_speed_smoke(results):
    sizes = {"operator_repeats": 1, "repeats": 1, "warmup": 0, "separate_repeats": 1, "separate_warmup": 0,
             "n_validation": 2, "train_iterations": 1}
    speed.run(quick=True, tasks=(TASK,), results_dir=results, threads=2, sizes=sizes, log=lambda *_: None)
    on_disk = json.loads((results / "speed.json").read_text())
    run = on_disk["runs"][0]
    assert run["device"] == "cpu" and set(run) >= {"operator", "throughput", "operator_floor", "training_overhead"}
    assert {c["angles"] for c in run["operator"]["cases"] if "angles" in c} >= {30, 180}
    timed = {m["method"] for m in run["throughput"][0]["methods"]}
    assert set(_expected_methods()) <= timed
    assert {m["model"] for m in run["operator_floor"][0]["models"]} == {m.name for m in learned(TASK)}
    assert {f["family"] for f in run["training_overhead"][0]["families"]} == set(_speed.STABLE_FAMILIES)
    assert len(on_disk["targets"]) == 2 and (results / "speed.png").stat().st_size > 0


def test_report_is_generated_from_the_json(results):
    page = report.render(results).read_text()
    for heading in ("## Reconstruction quality", "## Stability to perturbations", "## Speed"):
        assert heading in page
    for name in _expected_methods():
        assert f"| {name} |" in page
    assert "Below the protocol size" in page and "quality.png" in page


def test_report_says_what_has_not_been_run(tmp_path):
    page = report.render(tmp_path).read_text()
    assert "No `quality.json` yet" in page and "No `speed.json` yet" in page


def test_benchmark_command_errors(tmp_path, capsys):
    assert cli_main(["benchmark", "--quick"]) == 2
    assert "--results-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["benchmark", "--only", "nonsense", "--results-dir", str(tmp_path)])


def test_benchmark_command_passes_its_options(tmp_path, monkeypatch):
    seen = {}
    for name in ("quality", "stability", "speed"):
        monkeypatch.setitem(evaluation.BENCHMARKS, name, lambda name=name, **kw: seen.setdefault(name, kw))
    cli_main(["benchmark", "--quick", "--results-dir", str(tmp_path), "--resume", "--images", "3", "--tasks", TASK])
    assert seen["quality"]["resume"] and seen["stability"]["resume"]
    assert seen["stability"]["images"] == 3 and "resume" not in seen["speed"]
    assert all(kw["tasks"] == (TASK,) and kw["quick"] for kw in seen.values())
    assert (tmp_path / "benchmarks.md").is_file()


def test_baselines_rebuild_on_another_operator_to_the_same_reconstructor(results):
    # what speed.py uses to time them on a GPU: same weight and iterations on the moved operator
    from invstable.evaluation import baselines
    methods, _ = baselines(TASK, n_val=2, quick=True, exact_bounds=False)
    op = get_task(TASK).operator
    y = op.A(torch.rand(1, 1, 128, 128, generator=torch.Generator().manual_seed(1)))
    for m in methods:
        assert m.rebuild is not None, m.name
        with torch.no_grad():
            torch.testing.assert_close(m.rebuild(op)(y), m.reconstruct(y), msg=m.name)


def test_baselines_are_differentiable_like_the_models(results):
    # what lets invstable.stability attack them: gradients reach y
    from invstable.evaluation import baselines

    methods, _ = baselines(TASK, n_val=2, quick=True, exact_bounds=False)
    y = get_task(TASK).pairs("test").sample(0)[1][None].requires_grad_(True)
    for m in methods:
        if m.name.startswith(("FBP", "Tikhonov")):
            grad, = torch.autograd.grad(m.reconstruct(y).square().sum(), y)
            assert grad.abs().sum() > 0, m.name


def test_published_tuning_is_reused_only_for_the_same_computation(tmp_path, monkeypatch):
    curve = lambda grid: [[float(v), 20.0] for v in grid]  # noqa: E731
    widened = lambda grid, kind: {"initial": list(grid), "final": list(grid),  # noqa: E731
                                  "refine": _methods.REFINE[kind], **_methods.WIDENING}
    tuning = {"n_validation": 32,
              "tikhonov_identity": {"alpha": 0.01, "max_iter": 500, "validation_psnr": curve(_methods.ALPHAS),
                                    "grid": widened(_methods.ALPHAS, "tikhonov")},
              "tikhonov_gradient": {"alpha": 0.02, "max_iter": 500, "validation_psnr": curve(_methods.ALPHAS),
                                    "grid": widened(_methods.ALPHAS, "tikhonov")},
              "tv": {"lambda": 0.001, "max_iter": _methods.tv_max_iter("ct-30", False), "tol": _methods.TV_TOL,
                     "prox_iter": _methods.TV_PROX_ITER, "n_validation": 8, "validation_psnr": curve(_methods.LAMBDAS),
                     "grid": widened(_methods.LAMBDAS, "tv")}}
    payload = {"environment": {"git_commit": "abc"}, "tasks": [{"task": "ct-30", "tuning": tuning}]}
    folder = tmp_path / "benchmarks" / "results"  # the reference folder, shown relative to the current one
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    (folder / "quality.json").write_text(json.dumps(payload))
    got = _methods._published_tuning("ct-30", 32, False, folder)
    assert got["tv"]["lambda"] == 0.001 and got["source"].startswith("benchmarks/results/quality.json")
    assert _methods._published_tuning("blur-g2", 32, False, folder) is None  # another task
    assert _methods._published_tuning("ct-30", 16, False, folder) is None  # other validation images
    assert _methods._published_tuning("ct-30", 32, True, folder) is None  # other budgets
    tuning["tv"]["grid"]["initial"] = list(_methods.LAMBDAS[:3])
    (folder / "quality.json").write_text(json.dumps(payload))
    assert _methods._published_tuning("ct-30", 32, False, folder) is None  # another grid


def test_report_flags_weights_tuned_at_the_end_of_their_grid():
    curve = [[1e-4, 30.0], [1e-3, 29.0], [1e-2, 28.0]]
    notes = _report._grid_edges({"tv": {"lambda": 1e-4, "validation_psnr": curve},
                                "tikhonov_identity": {"alpha": 1e-3, "validation_psnr": curve}})
    assert len(notes) == 2 and "tv lambda = 0.0001 is at the lower end" in notes[0]
    assert _report._grid_edges({"tv": {"lambda": 1e-3, "validation_psnr": curve}}) == []


def test_stability_cost_measures_each_methods_step_and_the_protocol_hours(tmp_path):
    names = ["Tikhonov (identity, validation alpha)", "blur-gradflow"]
    payload = _stability.run_cost(results_dir=tmp_path, tasks=("blur-g2",), threads=1, images=1, methods=names,
                                  log=lambda *_: None)
    (task,) = json.loads((tmp_path / "stability_cost.json").read_text())["tasks"]
    assert [r["method"] for r in task["methods"]] == names and task == payload["tasks"][0]
    for r in task["methods"]:
        assert r["seconds_per_step"] > 0 and r["measured_batch"] == 3 and r["protocol_batch"] == 60
        # 4 levels x 2 objectives x (50 steps at the early-stopping minimum, 200 at the cap); hours to 2 decimals
        for key, steps in (("protocol_hours_at_min_steps", 50), ("protocol_hours_at_cap", 200)):
            assert r[key] == pytest.approx(r["seconds_per_step"] * steps * 8 / 3600, abs=0.006)
    lines = _report.stability_cost_lines(payload)
    assert any(line.startswith("| blur-gradflow |") for line in lines) and "--cost" in payload["command"]
