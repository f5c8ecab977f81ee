"""GPU correctness checks for ICP's CUDA paths, which CI (CPU only) cannot run. Usage on a CUDA machine:
``PYTHONPATH=. python3 tools/gpu_check_icp.py``. Exits non-zero on any failed check, and prints one line per check.

Checks:

For each target mode (eval, train):

1. The refinement and target pass replayed as a CUDA graph give the eager x_K and targets.
2. Parameters and their ``.grad`` are bit-identical across a replay. The BN buffers are unchanged (eval), or
   updated exactly as by the eager target pass (train).
3. A replay after an in-place weight update (an optimizer step) sees the new weights.
4. Under bf16 autocast the captured loop runs, with finite, bounded steps.
5. A batch of another size gets a second graph, with the same result as eager.

Then training steps run with a falling loss: eager, under ``train.compile=reduce-overhead``, under
bf16 + channels_last, and under compile with ``reuse_clean_grad``.
"""
from __future__ import annotations

import os
import sys

import torch

from icp import config, engine
from icp.bench import synthetic_splits
from icp.methods.icp import ICPOptions, refine

FAILED = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def trainer(*sets: str) -> engine.Trainer:
    """ResNet-20 with ICP-Adam on real Fashion-MNIST (FMNIST_ROOT), or on CIFAR-shaped noise without it."""
    root = os.environ.get("FMNIST_ROOT")
    cfg = config.resolve({}, ["model.name=resnet20", "train.device=cuda", "train.batch_size=128", "train.epochs=1",
                              "train.progress=false", "method.name=icp-adam", "data.train_subset=4096",
                              "data.test_subset=1000", *([f"data.root={root}"] if root else []), *sets])
    tr = engine.Trainer(cfg, "/nonexistent-gpu-check")
    tr.setup(None if root else synthetic_splits((3, 32, 32), 4096))
    return tr


def eager_pair(m, x, y):
    """The eager reference: refinement then target pass, with the same buffers the graph starts from."""
    return m.refined_input(x, y), m.target_features(m.refined_input(x, y))


def same(a, b, tol=1e-5):
    return torch.allclose(a, b, atol=tol, rtol=tol)


def main() -> int:
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    for target_mode in ("eval", "train"):
        tr = trainer(f"method.options.target_mode={target_mode}")
        m, model = tr.method, tr.model
        gen = torch.Generator().manual_seed(0)
        b = next(iter(tr.train_loader.epoch(tr.index_batches(gen), gen)))
        model.train()
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        params = {k: v.clone() for k, v in model.named_parameters()}
        grads = [p.grad.clone() for p in model.parameters()]
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        xk_e, t_e = eager_pair(m, b.x, b.y)
        buffers_after_eager = {k: v.clone() for k, v in model.named_buffers()}
        with torch.no_grad():  # back to the starting statistics for the graphed run
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        xk_g, t_g = (v.clone() if torch.is_tensor(v) else {k: t.clone() for k, t in v.items()}
                     for v in m.refine_and_target(b.x, b.y))
        diff = max((t_g[k] - t_e[k]).abs().max().item() for k in t_e)
        check(f"[{target_mode}] graph replay equals eager refinement and targets",
              same(xk_g, xk_e) and all(same(t_g[k], t_e[k]) for k in t_e),
              f"max |x diff| {(xk_g - xk_e).abs().max().item():.2e}, target diff {diff:.2e}, "
              f"|x_K - x| {(xk_e - b.x).abs().max().item():.2e}")
        stats_ok = all(same(v, buffers_after_eager[k]) for k, v in model.named_buffers())
        check(f"[{target_mode}] params and grads untouched, BN buffers as after the eager passes",
              all(torch.equal(params[k], v) for k, v in model.named_parameters()) and stats_ok
              and all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters())) and model.training
              and (target_mode == "train" or all(torch.equal(buffers[k], v) for k, v in model.named_buffers())))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.9).add_(0.01)
        xk_e2 = m.refined_input(b.x, b.y)
        xk_g2 = m.refine_and_target(b.x, b.y)[0].clone()
        check(f"[{target_mode}] replay sees in-place weight updates", same(xk_g2, xk_e2)
              and not same(xk_g2, xk_g, 1e-6), f"max |diff| {(xk_g2 - xk_e2).abs().max().item():.2e}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf = m.refine_and_target(b.x, b.y)[0].clone()
        bound = 1.05 * m.options.steps * m.options.step_size  # Adam moves a coordinate by about η per step
        check(f"[{target_mode}] bf16 autocast replay finite, steps bounded", bool(torch.isfinite(bf).all())
              and (bf - b.x).abs().max().item() <= bound,
              f"max |x_K - x| {(bf - b.x).abs().max().item():.2e} <= {bound:.2e}; vs fp32 "
              f"{(bf - xk_g2).abs().max().item():.2e}")
        xs, ys = b.x[:50], b.y[:50]
        small_e = m.refined_input(xs, ys)
        small_g = m.refine_and_target(xs, ys)[0].clone()
        check(f"[{target_mode}] second shape gets its own graph", same(small_g, small_e)
              and len(m._graphed.graphs) == 3, f"graphs {len(m._graphed.graphs)}")
        for p in model.parameters():
            p.grad = None

    torch.backends.cudnn.deterministic = False
    for sets in ([], ["train.compile=reduce-overhead"], ["train.bf16=true", "train.channels_last=true"],
                 ["train.compile=reduce-overhead", "method.options.reuse_clean_grad=true"]):
        tr = trainer(*sets, "optim.lr=0.05")
        sums, correct = {}, torch.zeros((), device="cuda", dtype=torch.long)
        batches = list(tr.train_loader.epoch(tr.index_batches(gen), gen))
        losses = []
        for epoch_pass in range(3):
            sums.clear()
            for batch in batches[:8]:
                tr.train_step(batch, 0, sums, correct)
            losses.append((sums["total"][-1] / (8 * 128)).item())
        check(f"training steps {' '.join(sets) or 'eager fp32'}", losses[-1] < losses[0] and all(
            map(lambda v: v == v, losses)), f"loss {[round(v, 4) for v in losses]}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
