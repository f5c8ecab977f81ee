"""The paper's figures, from the run records (through ``summary.csv`` and ``epochs.csv`` of :mod:`icp.aggregate`)
and, for the perturbation figure, one trained checkpoint. Each is written as ``<name>.png`` and ``<name>.pdf``.

=====================  ======================================================================  ===============
name                   what it shows                                                          needs study
=====================  ======================================================================  ===============
``learning_curves``    test top-1 vs epoch, mean ± sd band over seeds, per variant            main
``noise``              last-epoch test top-1 vs label-noise rate per variant (clean = 0)       noisy
``fewshot``            last-epoch test top-1 vs images per class (log axis) per variant       fewshot
``steps``              test top-1 and training images/s vs ICP refinement steps K             steps
``schedule``           α_e, the task-loss weight, per epoch as recorded; layer weights w_l    main
``input_shift``        mean |x_K − x| per epoch (how far ICP moves the input), per variant    main
``feature_distance``   per-layer MSE between clean and refined-input features, per epoch      main
``perturbation``       original, ICP-refined and i-FGSM images and their amplified            main
                       differences (paper Fig. 1), from a trained ICP checkpoint
``generative_curves``  test SSIM, ELBO and FID of reconstructions vs epoch per variant          generative
``reconstructions``    test images and each method's VAE reconstructions (lowest seed)        generative
``samples``            prior samples of each method's VAE, the same z for all                 generative
=====================  ======================================================================  ===============

Every figure names its study and ``n`` (complete seeds) in its title or legend; axes carry units. A figure whose
study has no complete run yet says so on an empty canvas instead of failing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

ICP_METHODS = ("icp", "icp-sgd", "icp-adam", "icp-ademamix", "ifgsm")
FIGURES: dict[str, tuple[str, Callable]] = {}  # name -> (study it needs, function)


def _libs():
    """matplotlib (Agg) and seaborn, imported on first use: the Snakefile imports this module for its catalogue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def figure(name: str, study: str):
    def register(fn):
        FIGURES[name] = (study, fn)
        return fn
    return register


def available(studies) -> list[str]:
    """The figures a grid with these studies yields."""
    return [name for name, (study, _) in FIGURES.items() if study in studies]


def _complete(runs: pd.DataFrame, study: Optional[str]) -> pd.DataFrame:
    sel = runs[runs.status == "complete"]
    if study is not None:
        sel = sel[sel.studies.fillna("").str.split(";").map(lambda s: study in s)]
    return sel


def _label_n(df: pd.DataFrame, by: str = "variant") -> dict[str, str]:
    """variant -> 'variant (n=K)' with K the number of distinct seeds."""
    return {v: f"{v} (n={g.seed.nunique()})" for v, g in df.groupby(by)}


def _empty(title: str, why: str):
    plt, _ = _libs()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    ax.set_title(title)
    return fig


def _condition(df: pd.DataFrame) -> pd.Series:
    return df.dataset + " / " + df.model


# ------------------------------------------------------------------------------------------ figures
@figure("learning_curves", "main")
def learning_curves(runs, epochs, ctx):
    plt, sns = _libs()
    done = _complete(runs, "main")
    ep = epochs[epochs.run_id.isin(done.run_id)].copy()
    title = "Study main: test top-1 vs epoch (mean ± sd over seeds)"
    if ep.empty:
        return _empty(title, "no complete run of study main yet")
    ep["test top-1 (%)"] = ep.test_top1 * 100
    ep["condition"] = _condition(ep) + " / " + ep.scenario
    ep["variant (n seeds)"] = ep.variant.map(_label_n(ep))
    g = sns.relplot(data=ep, x="epoch", y="test top-1 (%)", hue="variant (n seeds)", col="condition",
                    col_wrap=min(3, ep.condition.nunique()), kind="line", errorbar="sd", height=3.2, aspect=1.3,
                    facet_kws={"sharey": False})
    g.set_axis_labels("epoch", "test top-1 (%)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def _rate(tag: str) -> tuple[str, float]:
    m = re.match(r"^(sym|asy)([0-9.]+)$", tag)
    return (("symmetric" if m[1] == "sym" else "asymmetric"), float(m[2])) if m else ("clean", 0.0)


@figure("noise", "noisy")
def noise(runs, epochs, ctx):
    plt, sns = _libs()
    noisy = _complete(runs, "noisy")
    title = "Study noisy: last-epoch test top-1 vs label-noise rate (mean ± sd over seeds)"
    if noisy.empty:
        return _empty(title, "no complete run of study noisy yet")
    clean = _complete(runs, None)
    clean = clean[(clean.scenario == "clean") & clean.variant.isin(noisy.variant)
                  & _condition(clean).isin(_condition(noisy))]
    df = pd.concat([noisy, clean]).drop_duplicates("run_id").copy()
    kinds = df.scenario.map(_rate)
    df["noise"], df["noise rate (%)"] = [k for k, _ in kinds], [100 * r for _, r in kinds]
    df["test top-1 (%)"] = df.top1.astype(float) * 100
    df["variant (n seeds)"] = df.variant.map(_label_n(noisy))
    df["condition"] = _condition(df)
    rows = []
    for kind in ("symmetric", "asymmetric"):  # the clean point starts both curves
        part = df[df.noise.isin(["clean", kind])].assign(noise=kind)
        if (part["noise rate (%)"] > 0).any():
            rows.append(part)
    df = pd.concat(rows) if rows else df
    g = sns.relplot(data=df, x="noise rate (%)", y="test top-1 (%)", hue="variant (n seeds)", style="noise",
                    col="condition", kind="line", marker="o", errorbar="sd", height=3.4, aspect=1.3,
                    facet_kws={"sharey": False})
    g.figure.suptitle(title + "; 0% = the clean runs", y=1.02)
    return g.figure


@figure("fewshot", "fewshot")
def fewshot(runs, epochs, ctx):
    plt, sns = _libs()
    few = _complete(runs, "fewshot").copy()
    title = "Study fewshot: last-epoch test top-1 vs training images per class (mean ± sd over seeds)"
    if few.empty:
        return _empty(title, "no complete run of study fewshot yet")
    few["images per class"] = few.scenario.str.extract(r"^(\d+)shot$")[0].astype(float)
    few["test top-1 (%)"] = few.top1.astype(float) * 100
    few["variant (n seeds)"] = few.variant.map(_label_n(few))
    few["condition"] = _condition(few)
    g = sns.relplot(data=few, x="images per class", y="test top-1 (%)", hue="variant (n seeds)", col="condition",
                    kind="line", marker="o", errorbar="sd", height=3.4, aspect=1.3, facet_kws={"sharey": False})
    g.set(xscale="log")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def _option(runs: pd.DataFrame, name: str, default=None) -> pd.Series:
    return runs.method_options.map(lambda s: json.loads(s).get(name, default) if isinstance(s, str) else default)


@figure("steps", "steps")
def steps(runs, epochs, ctx):
    plt, sns = _libs()
    st = _complete(runs, "steps").copy()
    title = "Study steps: ICP refinement steps K (mean ± sd over seeds; K = 0 is the no-refinement control)"
    if st.empty:
        return _empty(title, "no complete run of study steps yet")
    st["K (refinement steps)"] = _option(st, "steps")
    st["test top-1 (%)"] = st.top1.astype(float) * 100
    st["training images/s"] = st.images_per_s.astype(float)
    st["condition"] = _condition(st)
    st["method (n seeds)"] = st.method + " (n=" + st.groupby(["method", "condition"]).seed.transform(
        "nunique").astype(str) + " per K)"
    conds = list(dict.fromkeys(st.condition))
    fig, axes = plt.subplots(len(conds), 2, figsize=(10, 3.4 * len(conds)), squeeze=False)
    for i, cond in enumerate(conds):
        part = st[st.condition == cond]
        for j, y in enumerate(("test top-1 (%)", "training images/s")):
            sns.lineplot(data=part, x="K (refinement steps)", y=y, hue="method (n seeds)", marker="o", errorbar="sd",
                         ax=axes[i, j])
            axes[i, j].set_title(f"{cond}: {'accuracy' if j == 0 else 'cost'}")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _icp_epochs(runs, epochs, study="main") -> pd.DataFrame:
    done = _complete(runs, study)
    done = done[done.method.isin(ICP_METHODS)]
    return epochs[epochs.run_id.isin(done.run_id)].copy()


@figure("schedule", "main")
def schedule(runs, epochs, ctx):
    plt, sns = _libs()
    from icp.methods.icp import layer_weights

    ep = _icp_epochs(runs, epochs)
    title = "ICP's loss weights, as recorded by the runs of study main"
    if ep.empty or "diag.alpha" not in ep:
        return _empty(title, "no complete ICP run of study main yet")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    ep["variant (n seeds)"] = ep.variant.map(_label_n(ep))
    sns.lineplot(data=ep, x="epoch", y="diag.alpha", hue="variant (n seeds)", marker="o", errorbar=None, ax=a)
    a.set(ylabel="α_e (weight of the task loss)", xlabel="epoch", ylim=(-0.05, 1.05),
          title="α_e = 1 in warm-up, then cos(π(e−W)/(2(E−W)))")
    taps = sorted(c.removeprefix("diag.feature_mse.") for c in ep.columns if c.startswith("diag.feature_mse."))
    n = len(taps) or 3
    x = np.arange(n)
    for off, kind in ((-0.2, "cosine"), (0.2, "uniform")):
        b.bar(x + off, layer_weights(kind, n), width=0.4, label=kind)
    b.set_xticks(x, taps or [str(i) for i in range(n)])
    b.set(xlabel="feature tap (shallow → deep)", ylabel="layer weight w_l", title=f"layer weights over {n} taps")
    b.legend(title="layer_weights")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@figure("input_shift", "main")
def input_shift(runs, epochs, ctx):
    plt, sns = _libs()
    frames = [_icp_epochs(runs, epochs, s) for s in ("main", "ablations", "steps")]
    ep = pd.concat(frames).drop_duplicates(["run_id", "epoch"]) if frames else pd.DataFrame()
    title = "How far ICP moves the input: mean |x_K − x| per epoch (normalised units, mean over seeds)"
    if ep.empty or "diag.input_shift" not in ep or ep["diag.input_shift"].notna().sum() == 0:
        return _empty(title, "no complete ICP run with refinement yet")
    ep = ep[ep["diag.input_shift"].notna()].copy()
    ep["input optimizer / η"] = (ep.method + " η=" + _option(ep, "step_size", 0.002).astype(str) + " "
                                 + _option(ep, "reduction", "mean").astype(str))
    ep["variant (n seeds)"] = ep.variant.map(_label_n(ep))
    ep["condition"] = _condition(ep) + " / " + ep.scenario
    g = sns.relplot(data=ep, x="epoch", y="diag.input_shift", hue="variant (n seeds)", col="condition",
                    kind="line", marker="o", errorbar="sd", height=3.4, aspect=1.4)
    g.set(yscale="log")
    g.set_axis_labels("epoch", "mean |x_K − x| (log)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


@figure("feature_distance", "main")
def feature_distance(runs, epochs, ctx):
    plt, sns = _libs()
    ep = _icp_epochs(runs, epochs)
    cols = [c for c in ep.columns if c.startswith("diag.feature_mse.")]
    title = "Per-layer feature distance between clean and ICP-refined inputs, study main (mean over seeds)"
    if ep.empty or not cols or ep[cols].notna().sum().sum() == 0:
        return _empty(title, "no complete ICP run with refinement yet")
    long = ep.melt(id_vars=["run_id", "variant", "seed", "epoch", "dataset", "model", "scenario"], value_vars=cols,
                   var_name="layer", value_name="MSE").dropna(subset=["MSE"])
    long["layer"] = long.layer.str.removeprefix("diag.feature_mse.")
    long["variant (n seeds)"] = long.variant.map(_label_n(long)) + " / " + long.scenario
    g = sns.relplot(data=long, x="epoch", y="MSE", hue="layer", col="variant (n seeds)", kind="line", marker="o",
                    errorbar="sd", height=3.2, aspect=1.3, col_wrap=min(3, long["variant (n seeds)"].nunique()))
    g.set(yscale="log")
    g.set_axis_labels("epoch", "MSE(f_l(x), f_l(x_K)) (log)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def perturbation_run(runs: pd.DataFrame) -> Optional[pd.Series]:
    """The run whose checkpoint the perturbation figure uses: the first complete ICP run of study main on clean
    data (seed 0 where there is one)."""
    done = _complete(runs, "main")
    done = done[done.method.isin(ICP_METHODS[:4]) & (done.scenario == "clean")]
    return None if done.empty else done.sort_values(["seed"], kind="stable").iloc[0]


@figure("perturbation", "main")
def perturbation(runs, epochs, ctx, n_images: int = 6):
    plt, _ = _libs()
    import dataclasses

    import torch

    from icp import checkpoint, config, data, loaders
    from icp.methods import get
    from icp.methods.icp import refine

    run = perturbation_run(runs)
    title = "Constructive (ICP) vs destructive (i-FGSM) perturbations of test images"
    if run is None:
        return _empty(title, "no complete ICP run of study main on clean data yet")
    trained = checkpoint.trained(run.path, "figure perturbation", files=("last.pt",))
    cfg = config.resolve(trained.config, ["train.device=cpu", "data.test_subset=200"])
    splits = data.build_splits(cfg)
    info = splits.info
    model = trained.model(info.num_classes, info.in_channels, splits.test.images.shape[1])
    loader = loaders.EvalLoader(splits.test, info, torch.device("cpu"), n_images, False)
    x, y = next(iter(loader))
    opts = get(cfg.method.name).Options(**{k: v for k, v in cfg.method.options.items() if k != "teacher"})
    opts = dataclasses.replace(opts, cuda_graph=False)
    icp_x = refine(model, x, y, opts)
    fgsm_x = refine(model, x, y, dataclasses.replace(opts, optimizer="ifgsm"))
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    to_img = lambda t: (t * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # noqa: E731
    with torch.no_grad():
        conf = {k: torch.softmax(model(v), 1).gather(1, y[:, None])[:, 0].numpy()
                for k, v in (("original", x), ("ICP", icp_x), ("i-FGSM", fgsm_x))}
    base = to_img(x)
    diffs = {"ICP": to_img(icp_x) - base, "i-FGSM": to_img(fgsm_x) - base}
    scale = max(float(np.abs(d).max()) for d in diffs.values()) or 1.0  # one colour scale for both rows
    rows = [("original", base, "original"), ("ICP-refined", to_img(icp_x), "ICP"),
            ("ICP − original", diffs["ICP"], None), ("i-FGSM", to_img(fgsm_x), "i-FGSM"),
            ("i-FGSM − original", diffs["i-FGSM"], None)]
    fig, axes = plt.subplots(len(rows), n_images, figsize=(1.8 * n_images, 2.0 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for i, (label, imgs, key) in enumerate(rows):
        for j in range(n_images):
            ax = axes[i, j]
            if key is None:  # a difference: signed, averaged over channels, amplified to the colour range
                shown = ax.imshow(imgs[j].mean(-1), cmap="coolwarm", vmin=-scale, vmax=scale)
            else:
                im = np.clip(imgs[j], 0, 1)
                ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray" if im.shape[-1] == 1 else None,
                          vmin=0, vmax=1)
                ax.set_xlabel(f"p(y)={conf[key][j]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.colorbar(shown, ax=axes[-1, :].tolist(), orientation="horizontal", shrink=0.6, aspect=40,
                 label=f"refined − original, pixel intensity (0–1 scale), mean over channels; full colour = ±{scale:.2g}")
    fig.suptitle(f"{title}\n{run.run_id}: K={opts.steps}, η={opts.step_size:g} ({opts.optimizer}); "
                 f"i-FGSM: same K and η, sign ascent; p(y) = softmax probability of the true class", fontsize=9)
    return fig


def _complete_vaes(runs: pd.DataFrame) -> pd.DataFrame:
    """The complete VAE runs of the generative study (not the classifiers that give FID its features)."""
    from icp.aggregate import kind_of

    done = _complete(runs, "generative")
    return done[done.model.map(kind_of) == "generative"]


def _vae_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and variant of the generative study, its complete VAE run of the lowest seed."""
    return _complete_vaes(runs).sort_values("seed", kind="stable").drop_duplicates(["dataset", "variant"])


def _load_vae(run):
    """(model in eval mode, test images (normalised), dataset info) of a trained VAE run."""
    import torch

    from icp import checkpoint, config, data, loaders

    trained = checkpoint.trained(run.path, "figure", files=("last.pt",))
    cfg = config.resolve(trained.config, ["train.device=cpu", "data.test_subset=100"])
    splits = data.build_splits(cfg)
    info = splits.info
    x, _ = next(iter(loaders.EvalLoader(splits.test, info, torch.device("cpu"), 100, False)))
    return trained.model(info.num_classes, info.in_channels, splits.test.images.shape[1]), x, info


def _show(ax, img, info):
    import numpy as np

    mean, std = np.array(info.mean).reshape(-1, 1, 1), np.array(info.std).reshape(-1, 1, 1)
    img = np.clip(img.detach().numpy() * std + mean, 0, 1).transpose(1, 2, 0)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0,
              vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _vae_grid(runs, title: str, draw, n_images: int = 8, show_inputs: bool = False):
    """One row of ``n_images`` images per VAE run of :func:`_vae_runs`: ``draw(dataset, run, model, x)`` gives
    (label, images) from the run's model and its first test images ``x``; ``show_inputs`` puts those test images
    above each dataset's rows."""
    import torch

    plt, _ = _libs()
    chosen = _vae_runs(runs)
    if chosen.empty:
        return _empty(title, "no complete VAE run of study generative yet")
    rows = []
    for dataset, part in chosen.groupby("dataset", sort=False):
        for i, (_, run) in enumerate(part.iterrows()):
            model, x, info = _load_vae(run)
            if show_inputs and i == 0:
                rows.append((f"{dataset}\ntest images", x[:n_images], info))
            with torch.no_grad():
                rows.append((*draw(dataset, run, model, x[:n_images]), info))
    fig, axes = plt.subplots(len(rows), n_images, figsize=(1.4 * n_images, 1.55 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for i, (label, images, info) in enumerate(rows):
        for j in range(n_images):
            _show(axes[i, j], images[j], info)
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


@figure("generative_curves", "generative")
def generative_curves(runs, epochs, ctx):
    plt, sns = _libs()
    ep = epochs[epochs.run_id.isin(_complete_vaes(runs).run_id)].copy()
    title = "Study generative: test metrics vs epoch (mean ± sd over seeds)"
    if ep.empty:
        return _empty(title, "no complete VAE run of study generative yet")
    ep["SSIM (%)"] = ep.test_ssim * 100
    names = {"SSIM (%)": "SSIM (%) ↑", "test_elbo": "ELBO (nats) ↑", "test_fid_recon": "FID of reconstructions ↓"}
    long = ep.melt(id_vars=["dataset", "variant", "seed", "epoch"], value_vars=list(names), var_name="metric")
    long = long.dropna(subset=["value"])  # FIDs are null on epochs that train.fid_every skips, or without features
    long["metric"] = long.metric.map(names)
    long["variant (n seeds)"] = long.variant.map(_label_n(ep))
    g = sns.relplot(data=long, x="epoch", y="value", hue="variant (n seeds)", row="dataset", col="metric",
                    kind="line", errorbar="sd", marker="o", height=2.8, aspect=1.2, facet_kws={"sharey": False})
    g.set_titles("{row_name}: {col_name}")
    g.set_axis_labels("epoch", "")
    g.figure.suptitle(title, y=1.02)
    return g.figure


@figure("reconstructions", "generative")
def reconstructions(runs, epochs, ctx, n_images: int = 8):
    def draw(dataset, run, model, x):
        return f"{run.variant} (s{run.seed})\nSSIM {100 * float(run.ssim):.1f}%", model(x).recon

    return _vae_grid(runs, "Study generative: test images and their reconstructions (z = μ) per method; "
                           "SSIM: the run's last-epoch test mean", draw, n_images, show_inputs=True)


@figure("samples", "generative")
def samples(runs, epochs, ctx, n_images: int = 8):
    import torch

    def draw(dataset, run, model, x):
        fid = "–" if run.fid_prior != run.fid_prior else f"{float(run.fid_prior):.1f}"
        return (f"{dataset}: {run.variant} (s{run.seed})\nFID(prior) {fid}",
                model.sample(n_images, torch.Generator().manual_seed(0)))

    return _vae_grid(runs, "Study generative: samples from the prior z ~ N(0, I), the same z for every method",
                     draw, n_images)


def checkpoint_runs(name: str, grid) -> list:
    """The grid runs whose checkpoints a figure reads (Snakemake inputs): perturbation's ICP run, and the VAE
    runs of the lowest seed per dataset and variant for reconstructions and samples."""
    if name == "perturbation":
        for run in grid.select("main") if "main" in grid.studies else []:
            if run.method in ICP_METHODS[:4] and run.scenario == "clean":
                return [run]
        return []
    if name in ("reconstructions", "samples") and "generative" in grid.studies:
        from icp.aggregate import kind_of

        chosen = {}
        for run in sorted(grid.select("generative"), key=lambda r: r.seed):
            if kind_of(run.model) == "generative":
                chosen.setdefault((run.dataset, run.run_id.split("/")[3]), run)
        return list(chosen.values())
    return []


# ------------------------------------------------------------------------------------------ writing
def make(name: str, runs: pd.DataFrame, epochs: pd.DataFrame, out_dir: str | Path, ctx=None) -> list[Path]:
    """Draw one figure and write ``<out_dir>/<name>.png`` and ``.pdf`` (atomically: nothing half-written)."""
    plt, sns = _libs()
    if name not in FIGURES:
        from icp.config import ConfigError

        raise ConfigError(f"unknown figure '{name}'; known: {', '.join(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sns.axes_style("whitegrid"):
        fig = FIGURES[name][1](runs, epochs, ctx)
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # epochs are whole numbers: no 1.5 on an epoch axis
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        # no creation date: the same records give byte-identical files (DVC and git see no change)
        fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths
