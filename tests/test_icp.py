"""ICP (icp/methods/icp.py): refinement maths, invariants, schedule, presets, engine integration, resume."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from icp import checkpoint, engine, methods
from icp.config import ConfigError
from icp.methods.icp import ICPOptions, layer_weights, refine, task_weight
from tests.conftest import assert_close_at_scale


@pytest.fixture(scope="module")
def real(fmnist_root_module):
    """A set-up ResNet-20 trainer on real Fashion-MNIST and one augmented training batch of 32 images."""
    from icp import config

    cfg = config.resolve({}, [f"data.root={fmnist_root_module}", "data.train_subset=256", "data.test_subset=100",
                              "train.batch_size=32", "train.progress=false", "model.name=resnet20",
                              "method.name=icp", "train.epochs=4"])
    tr = engine.Trainer(cfg, "/nonexistent-icp-test")
    tr.setup()
    gen = torch.Generator().manual_seed(0)
    # a few SGD steps: realistic weights, gradients and BatchNorm running statistics (not an untrained net)
    batches = list(tr.train_loader.epoch(tr.index_batches(gen), gen))
    opt = torch.optim.SGD(tr.model.parameters(), lr=0.05, momentum=0.9)
    for b in batches * 3:
        opt.zero_grad()
        F.cross_entropy(tr.model(b.x), b.y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return tr, batches[0]


@pytest.fixture(scope="module")
def fmnist_root_module(tmp_path_factory):
    from icp import data
    from pathlib import Path

    if data._find_fashion_mnist(Path("/nonexistent")) is None:
        pytest.fail("Fashion-MNIST is not installed: `apt-get install dataset-fashion-mnist` (done by .ci/run)")
    return tmp_path_factory.mktemp("data")


def _ctx(tr):
    return tr.method.ctx


def _method(tr, name="icp", **options):
    return methods.build_method(name, tr.model, options, _ctx(tr))


def _eval_loss(model, x, y):
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def _iterates(model, x, y, o: ICPOptions):
    """x_0..x_K: ``refine`` with k steps is the k-th iterate (state is fresh per call and deterministic)."""
    out = []
    for k in range(o.steps + 1):
        o_k = ICPOptions(**{**o.__dict__, "steps": k})
        out.append(refine(model, x, y, o_k))
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "ademamix", "ifgsm"])
def test_each_refinement_step_moves_task_loss_the_right_way(real, optimizer):
    tr, b = real
    model = tr.model.eval()
    # sgd with the authors' mean-reduced CE moves x by ~1e-5: use per-sample gradients so the change is visible
    o = ICPOptions(optimizer=optimizer, steps=5, reduction="sum" if optimizer == "sgd" else "mean")
    losses = [_eval_loss(model, xk, b.y) for xk in _iterates(model, b.x, b.y, o)]
    tr.model.train()
    diffs = [b_ - a for a, b_ in zip(losses, losses[1:])]
    if optimizer == "ifgsm":
        assert all(d > 0 for d in diffs), losses  # destructive: every step raises the loss
    else:
        assert all(d < 0 for d in diffs), losses  # constructive: every step lowers it
    assert abs(losses[-1] - losses[0]) > 1e-3


def test_step_sizes_match_the_update_rules(real):
    tr, b = real
    # float64: η·g of a mean-reduced loss is ~1e-7, below float32 resolution next to pixel values of ~1
    model, x0 = copy.deepcopy(tr.model).double().eval(), b.x.double()
    x = x0.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), b.y)
    (g,) = torch.autograd.grad(loss, x)
    eta = 0.002
    one = lambda opt, **kw: refine(model, x0, b.y, ICPOptions(optimizer=opt, steps=1, step_size=eta, **kw)) - x0
    # refine returns x0 + step; taking x0 away again costs a rounding of x0's size: a few float64 ulps of |x0|
    ulps = 4 * torch.finfo(torch.float64).eps * float(x0.abs().max())
    torch.testing.assert_close(one("sgd"), -eta * g, rtol=1e-6, atol=ulps)
    torch.testing.assert_close(one("sgd", reduction="sum"), -eta * g * len(b.y), rtol=1e-6, atol=ulps)
    # first Adam step: m̂ = g, v̂ = g², so the step is η·g/(|g| + ε) ≈ η per coordinate, against the gradient
    adam = one("adam")
    big = g.abs() > 1e-4
    torch.testing.assert_close(adam[big], -eta * g[big].sign(), rtol=1e-3, atol=1e-7)
    assert adam.abs().max() <= eta * (1 + 1e-5)
    # AdEMAMix adds α·(1−β3)·g/(|g|+ε): 5e-4 of the Adam step
    torch.testing.assert_close(one("ademamix")[big], -eta * (1 + 5 * 1e-4) * g[big].sign(), rtol=1e-3, atol=1e-7)
    ifgsm = one("ifgsm")
    torch.testing.assert_close(ifgsm, eta * g.sign(), rtol=1e-6, atol=ulps)


def test_refinement_leaves_parameters_grads_and_bn_statistics_bit_identical(real):
    tr, b = real
    m = _method(tr, optimizer="adam", steps=3)
    model = tr.model.train()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # weights + running stats + counters
    grads = [p.grad.clone() for p in model.parameters()]
    xk = m.refined_input(b.x, b.y)
    assert model.training, "the model's mode is restored after refinement"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert not torch.equal(xk, b.x) and not xk.requires_grad
    for p in model.parameters():
        p.grad = None


def test_distillation_target_carries_no_gradient(real):
    tr, b = real
    m = _method(tr, optimizer="adam", steps=2, warmup=0.0)
    model = tr.model.train()
    xk = m.refined_input(b.x, b.y)
    target = m.target_features(xk)
    assert all(not t.requires_grad and t.grad_fn is None for t in target.values())
    # the loss's gradient equals that of the clean features against the same targets taken as constants
    used = {}
    orig = m.refine_and_target
    def keep(*a):
        used["xk"], used["t"] = orig(*a)
        return used["xk"], used["t"]

    m.refine_and_target = keep
    out = m.forward_train(b, epoch=1)
    grads = torch.autograd.grad(out.losses["distill"], list(model.parameters()), allow_unused=True)
    _, feats = model(b.x, features=True)
    const = {k: v.clone() for k, v in used["t"].items()}
    manual = (1 - m.alpha(1)) * sum(w * F.mse_loss(feats[n], const[n]) for w, n in zip(m.weights, m.layers))
    expect = torch.autograd.grad(manual, list(model.parameters()), allow_unused=True)
    assert any(g is not None for g in grads)
    for g, e in zip(grads, expect):
        if g is None or e is None:
            assert g is None and e is None
        else:
            assert_close_at_scale(g, e)


def test_no_eval_mode_gradient_leaks_into_the_weight_update(real):
    """The authors' extra ``loss.backward()`` before refinement is absent: after forward_train the parameters
    hold no gradient at all, and the engine's backward gives exactly ∇(α·L_task + (1−α)·distill)."""
    tr, b = real
    m = _method(tr, optimizer="sgd", steps=2, warmup=0.0)
    tr.model.train()
    for p in tr.model.parameters():
        p.grad = None
    out = m.forward_train(b, epoch=2)
    assert all(p.grad is None for p in tr.model.parameters())
    assert set(out.losses) == {"task", "distill"}
    alpha = m.alpha(2)
    task = F.cross_entropy(out.logits, b.y)
    torch.testing.assert_close(out.losses["task"], alpha * task)


def _grads_after_step(model, fn):
    for p in model.parameters():
        p.grad = None
    fn(model)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("steps", [2, 0])
def test_authors_eval_ce_adds_exactly_the_eval_mode_ce_gradient(real, steps):
    """``authors_eval_ce``: the weight gradients of a step are those without it plus ∇_θ CE of the clean batch
    with the model in eval mode (after the clean pass's BN update, as in their code), on the same weights and
    batch; the term is recorded as ``eval_ce``. With K = 0 it is the α-only control plus that term."""
    tr, b = real
    start = copy.deepcopy(tr.model.state_dict())

    def step(option):
        def run(model):
            m = _method(tr, optimizer="adam", steps=steps, warmup=0.0, authors_eval_ce=option)
            model.train()
            out = m.forward_train(b, epoch=2)
            sum(out.losses.values()).backward()
            run.out = out
        return run

    def eval_ce(model):
        model.train()
        with torch.no_grad():
            model(b.x)  # the clean train-mode pass: its BN momentum update precedes the eval-mode forward
        model.eval()
        run_eval.loss = F.cross_entropy(model(b.x), b.y)
        run_eval.loss.backward()
        model.train()
    run_eval = eval_ce

    grads = {}
    for name, fn in (("off", step(False)), ("on", step(True)), ("eval", eval_ce)):
        tr.model.load_state_dict(start)
        grads[name] = _grads_after_step(tr.model, fn)
        if name == "on":
            on_out = fn.out
    tr.model.load_state_dict(start)
    assert any(g.abs().sum() > 0 for g in grads["eval"])
    for off, on, ev in zip(grads["off"], grads["on"], grads["eval"]):
        assert_close_at_scale(on, off + ev)
    assert not all(torch.equal(on, off) for off, on in zip(grads["off"], grads["on"]))
    torch.testing.assert_close(on_out.stats["eval_ce"], run_eval.loss.detach())
    assert "eval_ce" not in on_out.losses


def test_authors_eval_ce_is_off_in_warmup_and_by_default(real):
    tr, b = real
    assert ICPOptions().authors_eval_ce is False
    m = _method(tr, optimizer="adam", steps=2, warmup=0.5, authors_eval_ce=True)  # 4 epochs: warm-up 0, 1
    tr.model.train()
    for p in tr.model.parameters():
        p.grad = None
    out = m.forward_train(b, epoch=1)
    assert all(p.grad is None for p in tr.model.parameters()) and "eval_ce" not in out.stats
    for p in tr.model.parameters():
        p.grad = None


def test_authors_eval_ce_costs_one_ce_step_after_warmup():
    from icp.methods.options import training_cost

    assert ICPOptions(steps=5, warmup=0.0, authors_eval_ce=True).step_cost(0, 10) == pytest.approx(14 / 3 + 1)
    assert ICPOptions(steps=5, warmup=0.5, authors_eval_ce=True).step_cost(4, 10) == 1.0  # warm-up: plain ce
    assert ICPOptions(steps=0, authors_eval_ce=True).step_cost(9, 10) == 2.0  # alpha-only + the eval-mode ce
    assert training_cost("icp-adam", {"steps": 10, "warmup": 0.25, "authors_eval_ce": True}, 100) == \
        pytest.approx(25 + 75 * (24 / 3 + 1))


def test_task_weight_and_layer_weights_match_the_formulas():
    E, W = 100, 25
    assert [task_weight(e, W, E) for e in (0, 10, 24)] == [1.0, 1.0, 1.0]
    assert task_weight(W, W, E) == 1.0
    for e in (26, 50, 99):
        assert task_weight(e, W, E) == pytest.approx(math.cos(math.pi * (e - W) / (2 * (E - W))))
    assert 0 < task_weight(E - 1, W, E) < task_weight(50, W, E) < 1
    assert task_weight(3, 4, 4) == 1.0  # W = E: never distil
    w = layer_weights("cosine", 3)
    assert w[0] == 1.0 and w[-1] == pytest.approx(math.cos(math.pi / 4))
    assert w[1] == pytest.approx(math.cos(0.5 * math.pi / 4)) and w[0] > w[1] > w[2]
    assert layer_weights("cosine", 5)[2] == pytest.approx(math.cos(0.5 * math.pi / 4))
    assert layer_weights("uniform", 4) == [1.0] * 4


def test_method_schedule_uses_floor_of_warmup_fraction(real):
    tr, _ = real  # ctx.epochs == 4
    m = _method(tr, warmup=0.6)
    assert m.warmup_epochs == 2 and m.alpha(1) == 1.0 and m.alpha(3) == pytest.approx(math.cos(math.pi / 4))
    assert m.layers == ["stage1", "stage2", "stage3"] and m.weights == layer_weights("cosine", 3)


def test_warmup_epochs_compute_no_refinement(real, monkeypatch):
    tr, b = real
    m = _method(tr, warmup=0.5)
    calls = []
    monkeypatch.setattr(m, "refine_and_target", lambda *a, **k: calls.append(1))
    out = m.forward_train(b, epoch=1)
    assert calls == [] and set(out.losses) == {"task"}


def test_zero_steps_are_the_alpha_only_control_alpha_times_ce_and_nothing_else(real, monkeypatch):
    tr, b = real
    model = tr.model.train()
    for mode in ("train", "eval"):
        m = _method(tr, steps=0, warmup=0.25, target_mode=mode)  # 4 epochs: W = 1, epoch 2 has alpha cos(pi/6)
        calls = []
        monkeypatch.setattr(m, "refine_and_target", lambda *a, **k: calls.append(1))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = m.forward_train(b, epoch=2)
        after = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)
        expect = F.cross_entropy(model(b.x), b.y)  # one plain train-mode pass moves BN as the control's did
        assert calls == [] and set(out.losses) == {"task"}, mode  # no target pass, no distillation term
        assert m.alpha(2) == pytest.approx(math.cos(math.pi / 6))
        torch.testing.assert_close(out.losses["task"], m.alpha(2) * expect)
        assert all(torch.equal(after[k], v) for k, v in model.state_dict().items()), mode
        assert out.stats["input_shift"].item() == 0.0


def test_eval_target_mode_leaves_bn_statistics_unchanged_and_train_mode_moves_them(real):
    tr, b = real
    stats = lambda: [v.clone() for k, v in tr.model.state_dict().items() if "running" in k]
    xk = b.x + 0.01
    for mode, changes in (("eval", False), ("train", True)):
        m = _method(tr, target_mode=mode)
        before = stats()
        m.target_features(xk)
        moved = any(not torch.equal(a, c) for a, c in zip(before, stats()))
        assert moved == changes, mode
        assert tr.model.training


def test_clamp_keeps_inputs_in_the_image_range(real):
    tr, b = real
    m = _method(tr, optimizer="ifgsm", steps=5, step_size=0.5, clamp=True)
    xk = m.refined_input(b.x, b.y)
    lo, hi = (torch.tensor(v).view(1, -1, 1, 1) for v in _ctx(tr).input_range)
    assert (xk >= lo - 1e-6).all() and (xk <= hi + 1e-6).all()
    unclamped = _method(tr, optimizer="ifgsm", steps=5, step_size=0.5).refined_input(b.x, b.y)
    assert (unclamped > hi + 0.1).any()


def test_unknown_layer_and_bad_options_are_one_line_errors(real):
    tr, _ = real
    with pytest.raises(ConfigError, match="method.options.layers: unknown feature tap"):
        _method(tr, layers=["stage9"])
    with pytest.raises(ConfigError, match="method.options.steps"):
        methods.validate_options("icp", {"steps": -1})
    with pytest.raises(ConfigError, match="method.options.reuse_clean_grad"):
        methods.validate_options("icp", {"reuse_clean_grad": True, "warm_start": True})
    with pytest.raises(ConfigError, match="method.options.optimizer"):
        methods.validate_options("icp", {"optimizer": "rmsprop"})
    assert _method(tr, layers=["stage3", "pool"]).layers == ["stage3", "pool"]


def test_presets_differ_only_in_the_input_optimizer():
    base = methods.validate_options("icp", {})
    for name, opt in (("icp-sgd", "sgd"), ("icp-adam", "adam"), ("icp-ademamix", "ademamix"), ("ifgsm", "ifgsm")):
        preset = methods.validate_options(name, {})
        assert preset == {**base, "optimizer": opt}
        assert methods.validate_options(name, {"steps": 10})["steps"] == 10
    assert base["steps"] == 5 and base["step_size"] == 0.002 and base["warmup"] == 0.25


def test_reuse_clean_grad_takes_the_first_step_from_the_clean_backward(real):
    tr, b = real
    m = _method(tr, optimizer="sgd", steps=1, warmup=0.0, reuse_clean_grad=True)
    tr.model.train()
    for p in tr.model.parameters():
        p.grad = None
    seen = {}
    orig = m.refine_and_target

    def spy(x, y, index=None, g0=None):
        seen["g0"] = g0
        return orig(x, y, index, g0)

    m.refine_and_target = spy
    alpha = m.alpha(2)
    out = m.forward_train(b, epoch=2)
    assert not out.losses["task"].requires_grad and out.losses["distill"].requires_grad
    # the task term's weight gradients are already accumulated, and g0 is the train-mode ∇x L_task
    assert all(p.grad is not None for p in tr.model.parameters())
    x = b.x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(tr.model(x), b.y), x)
    assert_close_at_scale(seen["g0"], g)
    for p in tr.model.parameters():
        p.grad = None
    assert alpha == 1.0 or alpha < 1


def test_warm_start_starts_from_the_stored_perturbation(real):
    tr, b = real
    m = _method(tr, optimizer="adam", steps=2, warm_start=True)
    assert m.delta.shape == (_ctx(tr).num_train, 1, 28, 28) and "delta" in m.state_dict()
    x1 = m.refined_input(b.x, b.y, b.index)
    torch.testing.assert_close(m.delta[b.index], x1 - b.x)
    x2 = m.refined_input(b.x, b.y, b.index)
    fresh = _method(tr, optimizer="adam", steps=2).refined_input(x1, b.y)  # continue from x1
    torch.testing.assert_close(x2, fresh)
    assert "delta" not in _method(tr).state_dict()


def test_warmup_equal_to_epochs_is_identical_to_ce(tiny_cfg, tmp_path):
    common = ("train.epochs=1", "data.train_subset=300", "train.grad_clip=5")
    ce = engine.Trainer(tiny_cfg(*common, "method.name=ce"), tmp_path / "ce").run()
    icp = engine.Trainer(tiny_cfg(*common, "method.name=icp-adam", "method.options.warmup=1.0"),
                         tmp_path / "icp").run()
    a = checkpoint.load(tmp_path / "ce" / "last.pt")["method"]
    b = checkpoint.load(tmp_path / "icp" / "last.pt")["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ce["last"]["test"] == icp["last"]["test"]
    assert icp["epochs"][0]["train"]["task"] == ce["epochs"][0]["train"]["ce"]


@pytest.mark.parametrize("warm_start", [False, True])
def test_resumed_icp_run_equals_uninterrupted_run(tiny_cfg, tmp_path, warm_start):
    # W = floor(0.34·3) = 1: epoch 0 plain CE, epoch 1 refines with α = 1, epoch 2 distils with α = cos(π/4)
    cfg_overrides = ["train.epochs=3", "data.train_subset=100", "data.test_subset=100", "method.name=icp-adam",
                     "method.options.steps=2", "method.options.warmup=0.34",
                     f"method.options.warm_start={str(warm_start).lower()}", "train.grad_clip=5"]
    cfg = tiny_cfg(*cfg_overrides)
    full = engine.Trainer(cfg, tmp_path / "full").run()
    engine.Trainer(cfg, tmp_path / "part").run(max_epochs=2)
    ckpt = checkpoint.load(tmp_path / "part" / "last.pt")
    assert ckpt["config"]["method"]["options"]["steps"] == 2  # options round-trip through the checkpoint
    assert ckpt["config"]["method"]["options"]["warm_start"] is warm_start
    resumed = engine.Trainer(cfg, tmp_path / "part").run()
    assert resumed["resumed"] == 1 and resumed["status"] == "complete"
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in eps]
    assert strip(resumed["epochs"]) == strip(full["epochs"])
    assert resumed["epochs"][2]["train"]["distill"] > 0
    a = checkpoint.load(tmp_path / "full" / "last.pt")["method"]
    b = checkpoint.load(tmp_path / "part" / "last.pt")["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ("delta" in a) is warm_start
    with pytest.raises(ConfigError, match="another config"):
        other = [o for o in cfg_overrides if not o.startswith("method.options.steps")]
        engine.Trainer(tiny_cfg(*other, "method.options.steps=3"), tmp_path / "part").run()


def test_evaluation_uses_the_test_split_and_fresh_metrics(tiny_cfg, tmp_path):
    """Two more of the authors' bugs are absent: validation on the training split, and metrics never reset."""
    tr = engine.Trainer(tiny_cfg("method.name=icp", "train.epochs=1"), tmp_path / "run")
    tr.setup()
    assert len(tr.test_loader) == 300 and len(tr.splits.train) == 600 and tr.test_loader.images.shape[0] == 300
    first = tr.evaluate(tr.test_loader)
    assert tr.evaluate(tr.test_loader) == first  # a second pass does not accumulate into the first


def test_icp_records_alpha_input_shift_and_feature_distance_per_epoch(tiny_cfg, tmp_path):
    from icp.methods.icp import task_weight

    rec = engine.Trainer(tiny_cfg("method.name=icp-adam", "method.options.warmup=0.5", "train.epochs=2",
                                  "data.train_subset=200"), tmp_path / "icp").run()
    warm, refined = (e["diagnostics"] for e in rec["epochs"])
    assert warm == {"alpha": 1.0}  # warm-up epoch: no refinement
    assert refined["alpha"] == pytest.approx(task_weight(1, 1, 2))
    assert refined["input_shift"] > 0
    layers = [k for k in refined if k.startswith("feature_mse.")]
    assert layers and all(refined[k] > 0 for k in layers)
    ce = engine.Trainer(tiny_cfg("train.epochs=1", "data.train_subset=200"), tmp_path / "ce").run()
    assert ce["epochs"][0]["diagnostics"] is None
