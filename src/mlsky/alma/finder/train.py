"""Training the three networks of the ALMA pipeline on simulated cubes.

:func:`train_pipeline` simulates training and validation cubes with
:func:`mlsky.alma.sim.random_cube`, builds the inputs of each network, trains Blobs
Finder, Deep GRU and the ResNet battery with resumable checkpoints, and chooses the detection
thresholds on the validation cubes. Sizes follow ``MLSKY_SCALE`` (:func:`training_plan`).

Checkpoints are written with :mod:`mlsky.alma.finder.models.checkpoint`, so an interrupted run
never leaves a half-written one and resumes from the last epoch.

Examples
--------
>>> from mlsky.alma.finder.train import train_pipeline
>>> history = train_pipeline("weights/")          # doctest: +SKIP
>>> sorted(history)                               # doctest: +SKIP
['blobs_finder', 'deep_gru', 'resnet_flux', 'resnet_fwhm_x', 'resnet_fwhm_y', 'resnet_pa', 'thresholds']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mlsky.alma.finder import distributed
from mlsky.alma.finder.cube import Cube, as_cube
from mlsky.alma.finder.inputs import FILTER_WIDTHS, battery_input, box_spectrum, integrated_image, matched_filter_images
from mlsky.alma.finder.models import create_model
from mlsky.alma.finder.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from mlsky.alma.finder.pipeline import BATTERY, THRESHOLD_GRID, AlmaSourceFinder, PipelineConfig, default_weights_dir
from mlsky.alma.sim.sky import FWHM_PER_SIGMA, canonical_shape
from mlsky.config import by_scale, get_device, get_scale, progress_options, seed_everything

# --- losses ------------------------------------------------------------------------------


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity of two image batches ``(b, 1, H, W)`` in [0, 1]."""
    r = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    blur = lambda x: F.conv2d(x, kernel, padding=window // 2)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean()


def l1_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Blobs Finder's loss, as the paper: L1 plus (1 - SSIM)."""
    return F.l1_loss(pred, target) + (1 - ssim(pred, target))


def weighted_bce(pred: torch.Tensor, target: torch.Tensor, source_weight: float = 10.0) -> torch.Tensor:
    """Binary cross-entropy with source pixels weighted up: sources cover ~2% of the map, and
    unweighted, the empty sky dominates the loss and faint companions are given up."""
    return F.binary_cross_entropy(pred, target, weight=1.0 + (source_weight - 1.0) * target)


#: Blobs Finder's losses. The paper's is L1 + SSIM; measured here on CPU budgets, binary
#: cross-entropy on the footprint map learns the same task several times faster. At laptop
#: scale, weighting the source pixels up (with a tuned spectral window) raised the validation
#: F1 from 0.54 (plain cross-entropy, full band) to 0.63.
BLOBS_LOSSES = {"bce": F.binary_cross_entropy, "weighted-bce": weighted_bce, "l1+ssim": l1_ssim_loss}


# --- the training loop -------------------------------------------------------------------


def fit_network(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint: str | os.PathLike | None = None,
    extra: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    augment: bool = False,
    checkpoint_every: int | None = 100,
) -> dict[str, list[float]]:
    """Train with Adam; checkpoint every epoch and resume from ``checkpoint`` if it exists.

    Within an epoch a checkpoint is also written every ``checkpoint_every`` batches, with the
    position in the epoch (``extra["position"]``), so that a resume goes on with the next batch
    the interrupted run would have taken. In a distributed run
    (:mod:`mlsky.alma.finder.distributed`) each rank gives its own ``x, y``; a step averages
    the gradients over the whole effective batch of ``batch_size`` (each rank's local batch in
    proportion to its data), and only rank 0 writes the checkpoint.

    With a validation set, the weights of the epoch with the lowest validation loss are kept
    (in the model at the end, and as the checkpoint's inference weights). ``augment`` turns
    each batch of images and image targets by a random multiple of 90 degrees, flips it and
    shifts it cyclically (for Blobs Finder: the sky has no preferred orientation or place,
    while every simulated cube has a source at its centre, a shortcut not to learn). A checkpoint of another model,
    version or configuration is an error, not overwritten.

    Returns
    -------
    dict
        ``train`` and ``val`` loss per epoch (the validation curve).
    """
    device = get_device()
    model.to(device)
    net = distributed.wrap(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"train": [], "val": []}
    start, best, position = 0, None, None
    if checkpoint is not None and Path(checkpoint).is_file():
        state = read_checkpoint(checkpoint, model.model_name)
        if state["model_kwargs"] != getattr(model, "init_kwargs", {}):
            raise CheckpointError(
                f"{checkpoint} was trained with {state['model_kwargs']}, not {model.init_kwargs}; "
                "delete it or train into another folder"
            )
        model.load_state_dict(state["state_dict"])
        if state["optimizer"] is not None:
            opt.load_state_dict(state["optimizer"])
        start, history, best = state["epoch"], state["history"], state.get("best_state_dict")
        position = state["extra"].get("position")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    batches, weight, n_all = _batches(len(xt), batch_size)
    bar = tqdm(range(start, epochs), desc=model.model_name, **progress_options(progress), leave=False)
    for epoch in bar:
        gen.manual_seed(seed + epoch)  # same batches after a resume as in one run
        order = torch.randperm(len(xt), generator=gen)
        net.train()
        total, done = 0.0, 0
        if position is not None and position["epoch"] == epoch:
            done, total = position["batch"], position["total"]
        for step, (i0, i1) in enumerate(batches):
            idx = order[i0:i1]
            if len(idx) < 2 and len(order) > 1:
                continue  # BatchNorm needs two samples
            xb, yb = xt[idx], yt[idx]
            if augment:
                k, flip = (int(v) for v in torch.randint(0, 4, (2,), generator=gen))
                shift = tuple(int(v) for v in torch.randint(0, xb.shape[-1], (2,), generator=gen))
                xb, yb = (torch.roll(torch.rot90(v, k, (2, 3)), shift, (2, 3)) for v in (xb, yb))
                if flip % 2:
                    xb, yb = xb.flip(3), yb.flip(3)
            if step < done:
                continue  # taken before the interruption (the generator has been replayed up to here)
            opt.zero_grad()
            loss = loss_fn(net(xb.to(device)), yb.to(device))
            (loss * weight).backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            last = step + 1 == len(batches)  # the end-of-epoch checkpoint follows
            if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and not last:
                # Every rank's share of the partial loss goes into rank 0's position.
                partial = float(distributed.all_reduce_sum([total])[0])
                if distributed.is_main():
                    save_checkpoint(checkpoint, model, epoch=epoch, history=history, optimizer=opt, best_state_dict=best,
                                    extra={**(extra or {}), "position": {"epoch": epoch, "batch": step + 1, "total": partial}})
                total = partial if distributed.is_main() else 0.0
        position = None
        history["train"].append(float(distributed.all_reduce_sum([total])[0]) / n_all)
        if validation is not None:
            history["val"].append(evaluate_loss(model, *validation, loss_fn, batch_size))
            if history["val"][-1] <= min(history["val"]):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bar.set_postfix(train=f"{history['train'][-1]:.4f}", val=f"{history['val'][-1]:.4f}" if history["val"] else "-")
        if checkpoint is not None and distributed.is_main():
            save_checkpoint(checkpoint, model, epoch=epoch + 1, history=history, optimizer=opt, extra=extra,
                            best_state_dict=best)
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return history


def _batches(n: int, batch_size: int) -> tuple[list[tuple[int, int]], float, int]:
    """This rank's batches (slices of its shuffled items), its loss weight, and the items of all ranks.

    One process: slices of ``batch_size``. Several: every rank takes the same number of
    full local batches, sized in proportion to its items (at most all of them; an epoch drops
    each rank's remainder, different items every epoch), and weights its mean loss by its share of the
    step, so that the gradients DDP averages are those of the mean over the effective batch.
    """
    counts = distributed.all_gather_int(n)
    if len(counts) == 1:
        return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)], 1.0, max(n, 1)
    # A rank whose data are fewer than its share of the batch gives all it has, once.
    local = [min(c, max(2, round(batch_size * c / max(sum(counts), 1)))) for c in counts]
    steps = min((c // b if b else 0) for c, b in zip(counts, local))
    b = local[distributed.rank()]
    return [(k * b, (k + 1) * b) for k in range(steps)], b * len(counts) / sum(local), max(sum(counts), 1)


def evaluate_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, loss_fn, batch_size: int = 64) -> float:
    """Mean loss of a model over a data set, in eval mode."""
    device = get_device()
    model.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = torch.from_numpy(x[i : i + batch_size]).to(device), torch.from_numpy(y[i : i + batch_size]).to(device)
            total += float(loss_fn(model(xb), yb)) * len(xb)
    return total / max(len(x), 1)


# --- training sets -----------------------------------------------------------------------


@dataclass
class TrainingPlan:
    """Sizes of a training run (see :func:`training_plan`)."""

    shape: tuple[int, int, int]
    n_train: int
    n_val: int
    input_size: int
    cutout: int
    resnet_width: int
    gru_hidden: int
    epochs_blobs: int
    epochs_gru: int
    epochs_resnet: int
    batch_size: int = 16
    blobs_loss: str = "weighted-bce"
    #: The finder: the fully convolutional one on matched-filtered images (default), or the
    #: paper's ``blobs_finder`` on the integrated image (``filter_widths=()``).
    blobs_model: str = "blobs_finder_fcn"
    filter_widths: tuple[int, ...] = FILTER_WIDTHS
    blobs_width: int = 8
    #: Train the paper's ResNet battery (the default pipeline measures sources on the cube).
    battery: bool = False


def training_plan(scale: str | None = None, *, paper_model: bool = False) -> TrainingPlan:
    """The training sizes for a scale: ``ci`` seconds, ``laptop`` minutes on a CPU, ``paper``
    the paper's 256 x 256 x 128 cubes (20,000 in the paper; 2,000 here by default).

    ``paper_model=True`` gives the paper's set-up: Blobs Finder of Table 3 on the integrated
    image, and the ResNet battery; the default is the fully convolutional finder on
    matched-filtered images, with sources measured on the cube.
    """
    model = dict(blobs_model="blobs_finder", filter_widths=(), battery=True) if paper_model else {}
    return TrainingPlan(
        **model,
        shape=by_scale(ci=(32, 64, 64), laptop=(64, 128, 128), paper=(128, 256, 256), scale=scale),
        n_train=by_scale(ci=96, laptop=480, paper=2000, scale=scale),
        n_val=by_scale(ci=16, laptop=32, paper=200, scale=scale),
        input_size=by_scale(ci=64, laptop=128, paper=256, scale=scale),
        cutout=by_scale(ci=16, laptop=32, paper=32, scale=scale),
        resnet_width=by_scale(ci=4, laptop=8, paper=64, scale=scale),
        gru_hidden=by_scale(ci=16, laptop=32, paper=64, scale=scale),
        epochs_blobs=by_scale(ci=6, laptop=20, paper=50, scale=scale),
        epochs_gru=by_scale(ci=4, laptop=10, paper=40, scale=scale),
        epochs_resnet=by_scale(ci=4, laptop=15, paper=40, scale=scale),
        batch_size=by_scale(ci=16, laptop=16, paper=32, scale=scale),
    )


def simulate_cubes(n: int, shape: tuple[int, int, int], seed: int, progress: bool = True) -> Iterator:
    """``n`` random simulated cubes with seeds ``seed, seed + 1, ...``, one at a time.

    A generator, so that a training set of hundreds of cubes never sits in memory at once;
    wrap it in ``list`` to keep the cubes.
    """
    from mlsky.alma.sim.simulate import random_cube

    for i in tqdm(range(n), desc="simulating", leave=False, **progress_options(progress)):
        yield random_cube(seed + i, shape=shape)


def footprint_map(truth, ny: int, nx: int) -> np.ndarray:
    """Blobs Finder's target: every true source's 2-D Gaussian scaled to peak 1 (max where they overlap).

    The paper's target is the integrated sky model; scaling each source to unit peak gives
    faint sources the same weight as bright ones, so that one threshold suits them all.
    """
    yy, xx = np.mgrid[0:ny, 0:nx]
    target = np.zeros((ny, nx), np.float32)
    for row in truth:
        theta = np.radians(float(row["pa_deg"]))
        dx, dy = xx - float(row["x"]), yy - float(row["y"])
        a = (dx * np.cos(theta) + dy * np.sin(theta)) / (float(row["fwhm_x"]) / FWHM_PER_SIGMA)
        b = (-dx * np.sin(theta) + dy * np.cos(theta)) / (float(row["fwhm_y"]) / FWHM_PER_SIGMA)
        np.maximum(target, np.exp(-0.5 * (a**2 + b**2)), out=target)
    return target


def _blobs_item(sim, input_size: int, cube: Cube | None = None, filter_widths=()) -> tuple[np.ndarray, np.ndarray]:
    """Blobs Finder's input planes and target: the matched-filtered images when ``filter_widths``
    are given (padded to a multiple of 16), else the paper's integrated image (padded or cut to
    ``input_size``)."""
    cube = cube or as_cube(sim)
    if filter_widths:
        planes = matched_filter_images(cube, filter_widths)
        _, ny, nx = planes.shape
        size = (-(-ny // 16) * 16, -(-nx // 16) * 16)
    else:
        planes = integrated_image(cube)[None]
        _, ny, nx = planes.shape
        size = (input_size, input_size)
    target = footprint_map(sim.truth, ny, nx)[None]
    pad = lambda a: np.pad(a, [(0, 0)] + [(0, max(n - s, 0)) for n, s in zip(size, a.shape[1:])])[:, : size[0], : size[1]]  # noqa: E731
    return pad(planes), pad(target)


def _stack(pairs: list) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([p[0] for p in pairs]).astype(np.float32), np.stack([p[1] for p in pairs]).astype(np.float32)


def _emission_target(truth, n_chan: int, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    target = np.zeros(n_chan, np.float32)
    for row in truth:
        if x0 <= row["x"] < x1 and y0 <= row["y"] < y1:
            target[int(row["z0"]) : int(row["z1"])] = 1.0
    return target


def _gru_items(sim, rng: np.random.Generator, copies: int = 3, cube: Cube | None = None) -> tuple[list, list]:
    cube = cube or as_cube(sim)
    n_chan, ny, nx = cube.data.shape
    centres = [(r["x"], r["y"], max(r["fwhm_x"], r["fwhm_y"])) for r in sim.truth]
    centres += [(rng.uniform(0, nx), rng.uniform(0, ny), rng.uniform(2, 6)) for _ in range(len(centres))]
    xs, ys = [], []
    for cx, cy, size in centres:
        for _ in range(copies):
            half = max(1.0, size * rng.uniform(0.5, 1.5))
            jx, jy = rng.normal(0, 0.5, 2)
            x0, x1 = int(max(cx + jx - half, 0)), int(min(cx + jx + half, nx - 1)) + 1
            y0, y1 = int(max(cy + jy - half, 0)), int(min(cy + jy + half, ny - 1)) + 1
            xs.append(box_spectrum(cube, x0, x1, y0, y1))
            ys.append(_emission_target(sim.truth, n_chan, x0, x1, y0, y1))
    return xs, ys


def _battery_items(sim, size: int, rng: np.random.Generator, min_snr: float = 3.0, copies: int = 2,
                   cube: Cube | None = None) -> tuple[list, dict[str, list]]:
    cube = cube or as_cube(sim)
    n_chan = cube.data.shape[0]
    fx, fy, pa = canonical_shape(sim.truth["fwhm_x"], sim.truth["fwhm_y"], sim.truth["pa_deg"])
    xs, targets = [], {name: [] for name in BATTERY}
    for k, row in enumerate(sim.truth):
        if row["snr"] < min_snr:
            continue
        for _ in range(copies):
            z0 = int(np.clip(row["z0"] + rng.integers(-1, 2), 0, n_chan - 1))
            z1 = int(np.clip(row["z1"] + rng.integers(-1, 2), z0 + 1, n_chan))
            jx, jy = rng.normal(0, 0.5, 2)
            xs.append(battery_input(cube, row["x"] + jx, row["y"] + jy, z0, z1, size))
            targets["fwhm_x"].append([fx[k]])
            targets["fwhm_y"].append([fy[k]])
            targets["pa"].append([np.cos(np.radians(2 * pa[k])), np.sin(np.radians(2 * pa[k]))])
            targets["flux"].append([np.log10(row["flux"] / float(np.median(cube.noise[z0:z1])))])
    return xs, targets


@dataclass
class TrainingSets:
    """The inputs and targets of the three networks, built in one pass over the cubes."""

    blobs: tuple[np.ndarray, np.ndarray]
    gru: tuple[np.ndarray, np.ndarray]
    battery: tuple[np.ndarray, dict[str, np.ndarray]]


def training_sets(cubes: Iterable, plan: TrainingPlan, rng: np.random.Generator) -> TrainingSets:
    """Every network's training set from one pass over ``cubes`` (a list or a generator)."""
    blobs, gru_x, gru_y, bat_x = [], [], [], []
    bat_t: dict[str, list] = {name: [] for name in BATTERY}
    for sim in cubes:
        cube = as_cube(sim)
        blobs.append(_blobs_item(sim, plan.input_size, cube, plan.filter_widths))
        x, y = _gru_items(sim, rng, cube=cube)
        gru_x += x
        gru_y += y
        if plan.battery:
            x, t = _battery_items(sim, plan.cutout, rng, cube=cube)
            bat_x += x
            for name in BATTERY:
                bat_t[name] += t[name]
    if plan.battery and not bat_x:
        raise ValueError("no source with SNR >= 3 among the training cubes: simulate more cubes")
    return TrainingSets(
        blobs=_stack(blobs),
        gru=(np.stack(gru_x), np.stack(gru_y)),
        battery=(np.stack(bat_x)[:, None].astype(np.float32) if bat_x else np.zeros((0, 1, plan.cutout, plan.cutout), np.float32),
                 {k: np.asarray(v, np.float32) for k, v in bat_t.items()}),
    )


# --- the whole pipeline ------------------------------------------------------------------


def train_pipeline(out: str | os.PathLike | None = None, *, plan: TrainingPlan | None = None, seed: int = 0,
                   train_cubes: Sequence | None = None, val_cubes: Sequence | None = None,
                   progress: bool = True, data: str | os.PathLike | None = None, skip_bad: bool = False,
                   loader_workers: int = 0) -> dict:
    """Train Blobs Finder, Deep GRU and the ResNet battery and choose the thresholds.

    Parameters
    ----------
    out
        Folder for the checkpoints and ``pipeline.json`` (default :func:`default_weights_dir`).
        An interrupted run resumes from the checkpoints there.
    plan
        Sizes; default :func:`training_plan` for the current scale.
    seed
        Seed of the simulations and of training. Training cubes use seeds ``seed + i``;
        validation cubes ``seed + 10**6 + i``.
    train_cubes, val_cubes
        Cubes to use instead of simulating them (anything :func:`~mlsky.alma.finder.cube.as_cube`
        reads, with a ``truth`` table).
    data, skip_bad, loader_workers
        A folder made by ``mlsky alma simulate`` to stream the cubes from instead
        (:func:`mlsky.alma.finder.data.pipeline_data`): its train split for training, the
        first ``plan.n_val`` cubes of its validation split for validation and thresholds; bad
        shards stop the run, or are skipped with ``skip_bad``; ``loader_workers`` DataLoader
        processes read the shards. In a distributed run (``torchrun``) each rank trains on its
        own shards and rank 0 alone writes the checkpoints and tunes the thresholds.

    Returns
    -------
    dict
        The loss history of every network and the threshold scan on the validation cubes.
    """
    plan = plan or training_plan()
    out = Path(out) if out is not None else default_weights_dir()
    out.mkdir(parents=True, exist_ok=True)
    if data is not None:
        from mlsky.alma.finder.data import pipeline_data

        plan, train_cubes, val_cubes = pipeline_data(data, plan, out, skip_bad=skip_bad, workers=loader_workers)
    progress = progress and distributed.is_main()
    rng = seed_everything(seed)
    val_cubes = list(val_cubes if val_cubes is not None else simulate_cubes(plan.n_val, plan.shape, seed + 10**6, progress))
    train = training_sets(train_cubes if train_cubes is not None else simulate_cubes(plan.n_train, plan.shape, seed, progress),
                          plan, rng)
    val = training_sets(val_cubes, plan, rng)
    first = as_cube(val_cubes[0])
    history = {}

    if plan.blobs_model == "blobs_finder":
        net = create_model("blobs_finder", input_size=plan.input_size)
    else:
        net = create_model(plan.blobs_model, in_channels=len(plan.filter_widths), width=plan.blobs_width)
    history["blobs_finder"] = fit_network(net, *train.blobs, BLOBS_LOSSES[plan.blobs_loss], lr=3e-3, augment=True,
                                          epochs=plan.epochs_blobs, batch_size=plan.batch_size, validation=val.blobs,
                                          checkpoint=out / "blobs_finder.pt", seed=seed, progress=progress)

    gru = create_model("deep_gru", hidden=plan.gru_hidden)
    history["deep_gru"] = fit_network(gru, *train.gru, F.binary_cross_entropy, epochs=plan.epochs_gru, batch_size=64,
                                      validation=val.gru, checkpoint=out / "deep_gru.pt", seed=seed, progress=progress)

    xr, yr = train.battery
    vr, vy = val.battery
    for name, n_out in BATTERY.items() if plan.battery else ():
        mean, std = distributed.global_mean_std(yr[name])
        std = std + 1e-6
        norm = lambda t: ((t - mean) / std).astype(np.float32)  # noqa: E731
        resnet = create_model("resnet18", width=plan.resnet_width, out_features=n_out)
        history[f"resnet_{name}"] = fit_network(
            resnet, xr, norm(yr[name]), F.smooth_l1_loss, epochs=plan.epochs_resnet, batch_size=32,
            validation=(vr, norm(vy[name])), checkpoint=out / f"resnet_{name}.pt",
            extra={"target_stats": [mean.tolist(), std.tolist()]}, seed=seed, progress=progress)

    config = PipelineConfig(input_size=plan.input_size, cutout=plan.cutout,
                            pixel_scale_arcsec=first.pixel_scale_arcsec, channel_width_hz=first.channel_width_hz,
                            scale=get_scale(), blobs_model=plan.blobs_model, filter_widths=list(plan.filter_widths),
                            channels=int(plan.shape[0]))
    if distributed.is_main():  # the thresholds are tuned once, while the other ranks wait
        config.write(out)
        history["thresholds"] = tune_thresholds(out, val_cubes, measure="battery" if plan.battery else "fit")
    distributed.barrier()
    return history


def tune_thresholds(weights: str | os.PathLike, val_cubes: Sequence,
                    blob_thresholds: Sequence[float] = THRESHOLD_GRID["blob_threshold"],
                    gru_thresholds: Sequence[float] = THRESHOLD_GRID["gru_threshold"],
                    windows: Sequence[int] | None = None, measure: str = "fit") -> list[dict]:
    """Choose Blobs Finder's and Deep GRU's thresholds, and Blobs Finder's spectral window,
    for the best F1 on validation cubes (:meth:`AlmaSourceFinder.fit`), and write them to
    ``pipeline.json``; returns every point's scores.

    ``windows`` defaults to 0 (the paper's full-band image only) and a quarter of the band for
    the paper's finder, and to 0 for the fully convolutional one (it reads matched-filtered
    images instead). ``measure`` is how detections are characterised (see
    :class:`~mlsky.alma.finder.pipeline.AlmaSourceFinder`); the scan does not deblend, so that
    deblending, which comes after, cannot pull the detection thresholds towards pairs, and
    keeps every candidate: the thresholds are the networks' own, and the negated-cube test of
    :mod:`~mlsky.alma.finder.reliability` is applied on top of them at detection.
    """
    folder = Path(weights)
    finder = AlmaSourceFinder(folder, measure=measure, deblend=False, false_alarms=None).load()
    if windows is None:
        n_chan = as_cube(val_cubes[0]).data.shape[0]
        windows = (0,) if finder.config_.filter_widths else (0, max(n_chan // 4, 4))
    finder.fit(val_cubes, {"window": windows, "blob_threshold": blob_thresholds, "gru_threshold": gru_thresholds})
    config = PipelineConfig.read(folder)
    config.window, config.blob_threshold, config.gru_threshold = (
        finder.best_params_[k] for k in ("window", "blob_threshold", "gru_threshold"))
    config.write(folder)
    return [dict(zip(finder.scan_.colnames, row)) for row in finder.scan_.iterrows()]
