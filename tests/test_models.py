"""Learned unrolled inverses: the map, its certificate against adversarial search, files, training."""

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from invstable.models import FAMILIES, ModelFileError, UnrolledInverse, load_model
from invstable.models._initial import apply_filter, chebyshev_coefficients, filter_norm_bound
from invstable.operators import ParallelBeamCT
from invstable.stability import adversarial_perturbation, lipschitz_search, random_perturbation
from invstable.training import TrainConfig, batch_indices, evaluate, load_checkpoint, train

from ._tiny import TinyPairs, config, model, operator

HERE = Path(__file__).parent
STABLE = [f for f in FAMILIES if f != "unconstrained"]


def _trained(family, steps=15, **kw):
    torch.manual_seed(0)
    m = model(family, **kw)
    return train(m, TinyPairs(16), config=config(steps=steps, lr=3e-2, checkpoint_every=100)).model


# ---------------------------------------------------------------------------------------------- the map
@pytest.mark.parametrize("family", list(FAMILIES))
def test_shapes_and_bound_kind(family):
    m = model(family).eval()
    y = TinyPairs(2).y
    assert m(y).shape == (2, 1, 16, 16)
    bound = m.lipschitz_bound()
    assert (bound == math.inf) if family == "unconstrained" else (0 < bound < math.inf)


def test_ct_model_runs_on_sinograms():
    op = ParallelBeamCT(32, 10)
    m = UnrolledInverse(op, iterations=2, channels=2, depth=1, init_degree=5).eval()
    y = op.A(torch.rand(3, 1, 32, 32))
    assert m(y).shape == (3, 1, 32, 32)
    assert math.isfinite(m.lipschitz_bound())


@pytest.mark.parametrize("kwargs, match", [
    ({"family": "transformer"}, "family"), ({"iterations": 0}, "iterations"), ({"channels": 0}, "channels"),
    ({"max_step": 1.5}, "max_step"), ({"init": "fbp"}, "init"), ({"init_alpha": -1.0}, "init_alpha"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnrolledInverse(operator(), **kwargs)


def test_data_consistency_step_respects_the_stability_limit():
    m = model(max_step=1.0)
    with torch.no_grad():
        m.step_logits.fill_(50.0)  # sigmoid -> 1: the limit itself, never beyond
    limit = 2.0 / m.operator_norm() ** 2
    assert float(m.steps().detach().max()) <= limit * (1 + 1e-6)


def test_chebyshev_first_guess_is_tikhonov_like_and_its_norm_certified():
    op = operator()
    top = op.norm_bound() ** 2
    coef = chebyshev_coefficients(0.05, 30, top)
    x = TinyPairs(2).x
    y = op.A(x)
    got = apply_filter(op, y.double(), coef, top)
    # exact Tikhonov in Fourier for the circular blur
    h = op.transfer_function().to(torch.complex128)
    want = torch.fft.ifft2(h.conj() * torch.fft.fft2(y.double()) / (h.abs() ** 2 + 0.05)).real
    assert torch.allclose(got, want, atol=1e-3 * float(want.abs().max()))
    # the certified norm bounds the exact norm of the linear map p(A^T A) A^T (its Fourier symbol)
    exact = float((h.abs() * torch.as_tensor(
        __import__("numpy").polynomial.chebyshev.chebval((2 * h.abs() ** 2 / top - 1).numpy(), coef))).abs().max())
    assert filter_norm_bound(coef, top, op.norm_bound()) >= exact


# ---------------------------------------------------------------------------------------------- certificates
@pytest.mark.parametrize("family", STABLE)
def test_certificate_holds_against_adversarial_search_on_a_trained_model(family):
    m = _trained(family).eval()
    bound = m.lipschitz_bound()
    y = TinyPairs(4, seed=3).y
    for p in m.parameters():
        p.requires_grad_(False)
    ratio = lipschitz_search(m, y, radius=0.5, steps=60, restarts=2)
    assert float(ratio.max()) <= bound, (family, float(ratio.max()), bound)
    # random pairs far apart too
    gen = torch.Generator().manual_seed(0)
    y1, y2 = y + torch.randn(y.shape, generator=gen), y + torch.randn(y.shape, generator=gen)
    with torch.no_grad():
        r = (m(y1) - m(y2)).flatten(1).norm(dim=1) / (y1 - y2).flatten(1).norm(dim=1)
    assert float(r.max()) <= bound


def test_certificate_holds_with_weights_pushed_up():
    m = _trained("gradient_flow").eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "weight" in name:
                p.mul_(30.0)
    m.refresh()
    bound = m.lipschitz_bound()
    y = TinyPairs(4, seed=4).y
    ratio = lipschitz_search(m, y, radius=0.5, steps=60, restarts=2)
    assert float(ratio.max()) <= bound


def test_gradient_flow_bound_is_below_twice_tikhonov_on_the_tiny_task():
    # the design point: B_0 ~ 1/(2 sqrt(alpha_0)) plus K tau ||A|| stays within twice Tikhonov's constant
    m = model("gradient_flow", init_alpha=0.01, iterations=3, init_degree=30).eval()
    m(TinyPairs(1).y)  # the layers fix their step on the first input
    tikhonov_constant = 1 / (2 * math.sqrt(0.01))
    assert m.lipschitz_bound() <= 2 * tikhonov_constant


def test_stability_tools_on_a_linear_map():
    # for R(y) = 3 y the adversarial ratio is exactly 3 and the worst ||R(y+d) - R(y)|| is 3 eta ||y||
    y = torch.randn(2, 1, 4, 4)
    res = adversarial_perturbation(lambda v: 3 * v, y, 0.02, steps=5, restarts=2)
    assert torch.allclose(res.ratio, torch.full((2,), 3.0), rtol=1e-4)
    assert torch.allclose(res.objective, 3 * 0.02 * y.flatten(1).norm(dim=1), rtol=1e-4)
    d = random_perturbation(y, 0.01)
    assert torch.allclose(d.flatten(1).norm(dim=1), 0.01 * y.flatten(1).norm(dim=1), rtol=1e-5)
    assert torch.allclose(lipschitz_search(lambda v: 3 * v, y, steps=3, restarts=1), torch.full((2,), 3.0),
                          rtol=1e-4)
    with pytest.raises(ValueError, match="eta"):
        adversarial_perturbation(lambda v: v, y, 0.0)


# ---------------------------------------------------------------------------------------------- files
def test_save_load_round_trip_identical(tmp_path):
    m = _trained("hamiltonian", steps=3).eval()
    path = m.save(tmp_path / "m.safetensors", note="test")
    again = load_model(path)
    y = TinyPairs(3).y
    with torch.no_grad():
        assert torch.equal(m(y), again(y))
    assert again.lipschitz_bound() == m.lipschitz_bound()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed


def test_truncated_corrupted_and_foreign_files_are_refused(tmp_path):
    path = model().save(tmp_path / "m.safetensors")
    raw = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="not a readable"):
        load_model(tmp_path / "trunc.safetensors")
    bad = bytearray(raw)
    bad[10:20] = b"\xff" * 10
    (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"), metadata={"format": "other"})
    with pytest.raises(ModelFileError, match="not an invstable model"):
        load_model(tmp_path / "foreign.safetensors")
    with pytest.raises(ModelFileError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['INVSTABLE_PWNED']}",))


def test_malicious_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("INVSTABLE_PWNED", str(marker))
    for name in ("evil.safetensors", "evil.ckpt"):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({"format": "invstable.checkpoint/1", "x": _Exploit()}, fh)
    torch.save({"format": "invstable.checkpoint/1", "x": _Exploit()}, tmp_path / "evil2.ckpt")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "evil.safetensors")
    for name in ("evil.ckpt", "evil2.ckpt"):
        with pytest.raises(ModelFileError, match="would need code"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_a_model_with_an_unregistered_operator_cannot_be_saved(tmp_path):
    from invstable.operators import as_operator

    op = as_operator(torch.eye(16 * 16) * 0.5, in_shape=(1, 16, 16))
    m = UnrolledInverse(op, iterations=1, channels=1, depth=1, init="zero", image_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="register"):
        m.save(tmp_path / "m.safetensors")


# ---------------------------------------------------------------------------------------------- training
def test_tiny_training_lowers_the_loss_and_keeps_the_best():
    data, val = TinyPairs(16), TinyPairs(4, seed=1)
    m = model()
    before = evaluate(m, val)
    res = train(m, data, validation=val, config=config(steps=12, validate_every=4, checkpoint_every=100))
    losses = [h["loss"] for h in res.history]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert res.best_psnr > before
    assert evaluate(res.model, val) == pytest.approx(res.best_psnr, abs=1e-4)
    assert res.model.lipschitz_bound() < math.inf


def test_multilevel_training_doubles_the_depth():
    res = train(model(depth=1), TinyPairs(8), config=config(steps=4, levels=2, checkpoint_every=100))
    assert res.model.depth == 2 and len(res.model.blocks[0].layers) == 2
    assert math.isfinite(res.model.lipschitz_bound())


def test_time_smoothness_enters_the_loss():
    m = model(depth=2)
    assert float(m.time_smoothness().detach()) > 0
    res = train(m, TinyPairs(8), config=config(steps=2, smoothness=1.0, checkpoint_every=100))
    assert res.steps == 2


def test_mixed_precision_training_runs():
    res = train(model(), TinyPairs(8), config=config(steps=2, amp=True, checkpoint_every=100))
    assert all(math.isfinite(h["loss"]) for h in res.history)


def test_batches_depend_on_seed_and_step_only():
    a = batch_indices(3, 17, 100, 8)
    assert torch.equal(a, batch_indices(3, 17, 100, 8))
    assert not torch.equal(a, batch_indices(4, 17, 100, 8))
    epoch = torch.cat([batch_indices(0, s, 16, 4) for s in range(4)])
    assert sorted(epoch.tolist()) == list(range(16))


def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="device"):
        train(model(), TinyPairs(4), config=config(device="cuda:7" if torch.cuda.is_available() else "cuda"))


def _run_tiny(*args, env=None):
    return subprocess.Popen([sys.executable, str(HERE / "_tiny.py"), *map(str, args)], cwd=HERE.parent,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    steps = 40
    full = _run_tiny(steps, tmp_path / "full.ckpt", tmp_path / "full.safetensors")
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()[-2000:]
    ckpt = tmp_path / "cut.ckpt"
    cut = _run_tiny(steps, ckpt, tmp_path / "cut.safetensors")
    deadline = time.time() + 120
    while time.time() < deadline and cut.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["step"] >= 7:
            break
        time.sleep(0.01)
    assert cut.poll() is None, "the run ended before it could be killed; make it longer"
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < steps
    resumed = _run_tiny(steps, ckpt, tmp_path / "cut.safetensors", "resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    a, b = load_model(tmp_path / "full.safetensors"), load_model(tmp_path / "cut.safetensors")
    for (k, v), (_, w) in zip(a.weights().items(), b.weights().items()):
        assert torch.equal(v, w), k


def test_resume_refuses_other_settings(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    train(model(), TinyPairs(8), config=config(steps=2), checkpoint=ckpt)
    with pytest.raises(ValueError, match="other training settings"):
        train(model(), TinyPairs(8), config=config(steps=2, lr=0.5), checkpoint=ckpt, resume=True)
    with pytest.raises(FileNotFoundError):
        train(model(), TinyPairs(8), config=config(steps=2), checkpoint=tmp_path / "none.ckpt", resume=True)


def test_ddp_on_two_gloo_processes_matches_one_process(tmp_path):
    steps = 6
    single = _run_tiny(steps, tmp_path / "one.ckpt", tmp_path / "one.safetensors")
    assert single.wait(timeout=300) == 0, single.stderr.read().decode()[-2000:]
    port = 29500 + os.getpid() % 1000
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", str(port), str(HERE / "_tiny.py"), str(steps), str(tmp_path / "two.ckpt"),
                          str(tmp_path / "two.safetensors")], cwd=HERE.parent, capture_output=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr.decode()[-3000:]
    a, b = load_model(tmp_path / "one.safetensors"), load_model(tmp_path / "two.safetensors")
    for (k, v), (_, w) in zip(a.weights().items(), b.weights().items()):
        assert torch.allclose(v, w, rtol=1e-4, atol=1e-5), (k, float((v - w).abs().max()))


# ---------------------------------------------------------------------------------------------- shipped models
def _shipped(stable_only=True):
    from invstable.models import list_models
    from invstable.models._pretrained import REGULARISERS  # any-operator models: tests/test_universal.py

    return [n for n in list_models() if n not in REGULARISERS and not (stable_only and n.endswith("unconstrained"))]


def _search_shipped(name, steps, restarts, count):
    from invstable.data import task

    m = load_model(name)
    for p in m.parameters():
        p.requires_grad_(False)
    spec = task("ct-30" if name.startswith("ct30") else "blur-g2")
    y = torch.stack([spec.pairs("test")[i][1] for i in range(count)])
    bound = m.lipschitz_bound()
    ratio = lipschitz_search(m, y, radius=0.05, steps=steps, restarts=restarts)
    assert float(ratio.max()) <= bound, (name, float(ratio.max()), bound)
    return float(ratio.max()), bound


@pytest.mark.parametrize("name", _shipped())
def test_shipped_model_certificate_holds_against_a_short_search(name):
    _search_shipped(name, steps=20, restarts=1, count=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped())
def test_shipped_model_certificate_holds_against_the_protocol_search(name):
    _search_shipped(name, steps=200, restarts=3, count=4)


@pytest.mark.parametrize("name", _shipped(stable_only=False))
def test_shipped_models_are_small_and_load_on_cpu(name):
    from invstable.models._pretrained import _pretrained_path

    assert _pretrained_path(name).stat().st_size < 4 * 2 ** 20
    m = load_model(name)
    assert next(m.parameters()).device.type == "cpu"


# ---------------------------------------------------------------------------------------------- review regressions
def test_model_refuses_another_image_size():
    # its norms, steps and first guess are certified for one size (review: an operator whose norm depends on
    # the size gave a ratio of 1.5e5 against a bound of 5.4 after a size change)
    import deepinv

    op = deepinv.physics.Blur(torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]]]]), padding="circular")
    m = UnrolledInverse(op, iterations=1, channels=1, depth=1, image_shape=(1, 10, 10)).eval()
    m(torch.randn(1, 1, 10, 10))
    with pytest.raises(ValueError, match="certified for images of shape"):
        m(torch.randn(1, 1, 24, 24))


class _Interrupt(Exception):
    pass


class _Dying(torch.utils.data.Dataset):
    """Pairs that raise after ``after`` items: a run interrupted between two checkpoints."""

    def __init__(self, data, after):
        self.data, self.after, self.seen = data, after, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.seen += 1
        if self.seen > self.after:
            raise _Interrupt
        return self.data[i]


def test_split_step_control_resumes_exactly_and_returns_the_validated_model(tmp_path):
    # review: the sub-step count of step_control="split" was not saved, so a resumed run diverged and the
    # returned best model was not the validated one
    kw = {"step_control": "split", "step": 4.0, "image_shape": (1, 16, 16)}
    data, val = TinyPairs(16), TinyPairs(4, seed=1)
    cfg = config(steps=6, validate_every=2)
    full = train(model(**kw), data, validation=val, config=cfg, checkpoint=tmp_path / "a")
    assert evaluate(full.model, val) == pytest.approx(full.best_psnr, abs=1e-4)
    assert any(layer.substeps > 1 for b in full.model.blocks for layer in b.layers)
    with pytest.raises(_Interrupt):
        train(model(**kw), _Dying(data, after=3 * 4), validation=val, config=cfg, checkpoint=tmp_path / "b")
    assert load_checkpoint(tmp_path / "b")["step"] == 3
    resumed = train(model(**kw), data, validation=val, config=cfg, checkpoint=tmp_path / "b", resume=True)
    for (k, v), (_, w) in zip(full.model.weights().items(), resumed.model.weights().items()):
        assert torch.equal(v, w), k


def test_resume_refuses_another_model(tmp_path):
    train(model(), TinyPairs(8), config=config(steps=2), checkpoint=tmp_path / "c")
    with pytest.raises(ValueError, match="another model"):
        train(model("antisymmetric"), TinyPairs(8), config=config(steps=2), checkpoint=tmp_path / "c", resume=True)


def test_dense_multilevel_is_refused_before_training():
    with pytest.raises(ValueError, match="dense"):
        train(model("dense"), TinyPairs(8), config=config(steps=4, levels=2))


# ---------------------------------------------------------------------------------------------- metadata
def test_model_info_says_task_operator_noise_recipe_scores_and_bound():
    from invstable.data._tasks import TASKS
    from invstable.models import model_info, recommended

    info = model_info("blur-wide")
    spec = TASKS[info["task"]]
    assert info["geometry"] == {"operator": spec.operator["name"], **spec.operator["params"]}
    assert info["noise"]["level"] == spec.noise.level and info["noise"]["kind"] == spec.noise.kind
    assert info["recipe"] == info["training"]["recipe"]
    assert info["validation"]["psnr"] == info["training"]["validation_psnr"]
    assert info["lipschitz_bound"] == info["training"]["lipschitz_bound"] and info["certified"]
    row = recommended()[info["task"]]["candidates"]["blur-wide"]
    assert info["validation"]["selection"][info["task"]]["validation_psnr"] == row["validation_psnr"]
    baseline = model_info("ct30-unconstrained")
    assert baseline["lipschitz_bound"] == math.inf and not baseline["certified"]


def test_universal_info_gives_the_bound_of_each_preset():
    from invstable.models import model_info

    info = model_info("universal")
    assert info["task"] is None and info["geometry"] is None
    for task, preset in info["presets"].items():
        assert info["lipschitz_bound"][task] == pytest.approx(1 / (2 * math.sqrt(preset["strong_convexity"])))
        assert info["validation"]["presets"][task]["psnr"] == preset["validation_psnr"]
    assert info["noise"]["sigmas"] == [lv["sigma"] for lv in info["noise_levels"]]


def test_loaded_models_carry_their_info_with_the_bound_of_their_weights():
    from invstable.data import task
    from invstable.models import format_info

    m = load_model("ct30-gradflow")
    assert m.info["task"] == "ct-30" and m.info["lipschitz_bound"] == pytest.approx(m.lipschitz_bound())
    assert m.info["lipschitz_bound"] == pytest.approx(m.info["training"]["lipschitz_bound"], rel=1e-3)
    u = load_model("universal", operator=task("blur-g2").operator, preset="blur-g2")
    assert u.info["task"] == "blur-g2" and u.info["geometry"]["operator"] == "blur"
    assert u.info["lipschitz_bound"] == u.lipschitz_bound()
    text = format_info(m.info)
    for part in ("ct-30", "angles=30", "training noise", "recipe", "validation", "certified Lipschitz bound"):
        assert part in text
