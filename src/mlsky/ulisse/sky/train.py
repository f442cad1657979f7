"""Self-supervised training of :class:`~mlsky.ulisse.sky.encoder.SkyEncoder` on galaxy cutouts.

No label is used. SimCLR (Chen et al. 2020), as Stein et al. (2021) and Hayat et al. (2021)
applied it to survey images: two random views of each galaxy (:mod:`~mlsky.ulisse.sky.augment`)
go through the encoder and a small projection head, and the NT-Xent loss pulls the two views of
a galaxy together and pushes the other galaxies of the batch away. What survives is what the
augmentations do not change: shape, structure, colour and concentration, not orientation,
position, seeing, depth or noise. The projection head is dropped afterwards; the encoder's pooled
vector is the feature.

The cutouts are decoded once into a uint8 array in memory (:func:`training_fields`); every epoch
then draws fresh views from it. Training is seeded: the same seed, data and machine give the same
weights. On a CPU that computes bfloat16 natively the forward and backward passes run under bf16
autocast (about 2.3x faster on 2 cores, measured); the weights stay fp32.

Examples
--------
>>> from mlsky.ulisse.sky.train import FIELD, train_encoder, training_fields, training_plan
>>> plan = training_plan()
>>> fields = training_fields(paths, size=round(FIELD * plan.resolution), crop=plan.crop)  # doctest: +SKIP
>>> encoder, history = train_encoder(fields, plan, seed=0)                                # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mlsky.config import by_scale, progress_options, seed_everything
from mlsky.ulisse.cutouts import cutout, read_image
from mlsky.ulisse.features import native_bf16
from mlsky.ulisse.sky.augment import Augmentation, galaxy_views
from mlsky.ulisse.sky.encoder import SkyEncoder

#: Format tag of an exported encoder file.
EXPORT_FORMAT = "mlsky-ulisse-sky-encoder"
EXPORT_VERSION = 1
#: The feature extractor's stamp is the central half of a cutout; training fields are wider
#: (this factor) so that a rotated view has sky in its corners.
FIELD = 1.5


@dataclass(frozen=True)
class SkyTrainingPlan:
    """What one training run does (see :func:`training_plan` for the values at each scale)."""

    epochs: int
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    widths: tuple[int, ...] = (32, 64, 128, 256)
    resolution: int = 64
    crop: float = 1.0
    projection: int = 128
    augmentation: Augmentation = field(default_factory=Augmentation)
    images: int | None = None


def training_plan(scale: str | None = None) -> SkyTrainingPlan:
    """The plan at a scale: ``ci`` (seconds, 64 images), ``laptop`` (the shipped encoder), ``paper``."""
    tiny = SkyTrainingPlan(epochs=1, batch_size=16, widths=(8, 16, 32, 64), resolution=32, crop=0.6, images=64)
    return by_scale(ci=tiny, laptop=SkyTrainingPlan(epochs=36, crop=0.6), paper=SkyTrainingPlan(epochs=200, crop=0.6),
                    scale=scale)


def training_fields(paths: Sequence[str | Path], *, size: int, crop: float = 1.0,
                    progress: bool = False) -> np.ndarray:
    """The training fields of image files: (N, 3, size, size) uint8, each :data:`FIELD` views wide.

    The encoder's view is the central ``crop`` of the feature extractor's stamp, which is the
    central half of the cutout; a field is the central ``FIELD * crop / 2`` of the cutout,
    anti-aliased and resampled to ``size`` pixels by :func:`~mlsky.ulisse.cutouts.cutout`.

    Raises
    ------
    ImageReadError
        For the first file that cannot be read.
    """
    out = np.empty((len(paths), 3, size, size), np.uint8)
    for i, path in enumerate(tqdm(paths, desc="decoding cutouts", unit="img", **progress_options(progress))):
        stamp = cutout(read_image(path), crop="centre", crop_fraction=FIELD * crop / 2, size=size)
        out[i] = np.round(stamp * 255).astype(np.uint8).transpose(2, 0, 1)
    return out


class ProjectionHead(nn.Sequential):
    """The MLP between the features and the contrastive loss (dropped after training)."""

    def __init__(self, features: int, out: int):
        super().__init__(nn.Linear(features, features), nn.BatchNorm1d(features), nn.ReLU(inplace=True),
                         nn.Linear(features, out))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy for two views (rows match) of a batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def train_encoder(fields: np.ndarray, plan: SkyTrainingPlan | None = None, *, seed: int = 0,
                  progress: bool = False) -> tuple[SkyEncoder, dict]:
    """Train a :class:`SkyEncoder` with SimCLR on training fields, without labels.

    Parameters
    ----------
    fields
        (N, 3, S, S) uint8 from :func:`training_fields` (S = ``FIELD * plan.resolution``).
    plan
        Sizes and hyper-parameters (default: :func:`training_plan` at the current scale).
    seed
        Seeds the weights, the order of the galaxies and every augmentation.

    Returns
    -------
    encoder, history
        The trained encoder (eval mode, CPU) and ``{"loss": [mean loss of each epoch],
        "seconds": ..., "plan": ..., "seed": ..., "images": N, "precision": ...}``.

    Raises
    ------
    ValueError
        If there are fewer fields than one batch, or they are not of the plan's size.
    """
    plan = plan or training_plan()
    expected = round(FIELD * plan.resolution)
    if fields.ndim != 4 or fields.shape[1:] != (3, expected, expected) or fields.dtype != np.uint8:
        raise ValueError(f"training fields of shape {fields.shape} ({fields.dtype}); the plan needs uint8 "
                         f"(N, 3, {expected}, {expected}).")
    if len(fields) < plan.batch_size:
        raise ValueError(f"{len(fields)} images are fewer than one batch of {plan.batch_size}.")
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(fields)
    mean = (data.float().mean(dim=(0, 2, 3)) / 255).tolist()
    std = (data.float().std(dim=(0, 2, 3)) / 255).tolist()
    encoder = SkyEncoder(plan.widths, plan.resolution, plan.crop, mean, std)
    head = ProjectionHead(encoder.num_features, plan.projection)
    device = torch.device("cpu")  # the sky encoder is trained where it is shipped from: a CPU
    bf16 = native_bf16(device)
    layout = torch.channels_last
    encoder, head = encoder.to(memory_format=layout).train(), head.train()
    parameters = [*encoder.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=plan.learning_rate, weight_decay=plan.weight_decay)
    steps_per_epoch = len(fields) // plan.batch_size
    total, warmup = plan.epochs * steps_per_epoch, steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    history: dict = {"loss": []}
    started = time.perf_counter()
    bar = tqdm(range(plan.epochs), desc="sky encoder (SimCLR)", unit="epoch", **progress_options(progress))
    for _ in bar:
        order = torch.randperm(len(fields), generator=generator)
        losses = []
        for step in range(steps_per_epoch):
            batch = data[order[step * plan.batch_size:(step + 1) * plan.batch_size]]
            views = [galaxy_views(batch, plan.augmentation, size=plan.resolution, field=FIELD, generator=generator)
                     .contiguous(memory_format=layout) for _ in range(2)]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = head(encoder(torch.cat(views)))
            loss = nt_xent(z[:len(batch)], z[len(batch):], plan.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        history["loss"].append(float(np.mean(losses)))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
    history.update(seconds=time.perf_counter() - started, seed=seed, images=len(fields),
                   precision="bf16 autocast" if bf16 else "fp32", plan=_plan_dict(plan))
    return encoder.to(memory_format=torch.contiguous_format).eval(), history


def _plan_dict(plan: SkyTrainingPlan) -> dict:
    out = asdict(plan)
    out["widths"] = list(plan.widths)
    return out


def export_encoder(encoder: SkyEncoder, history: dict, path: str | os.PathLike) -> Path:
    """Write the encoder for inference (weights and configuration, no optimiser state), atomically."""
    from mlsky import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "config": encoder.config,
             "state_dict": {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
             "history": history, "mlsky_version": __version__}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_encoder(path: str | os.PathLike) -> tuple[SkyEncoder, dict]:
    """Read a file written by :func:`export_encoder`: the encoder (eval mode) and its training history.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Naming the file, if it is not a readable sky-encoder export of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sky encoder file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for a damaged file
        raise ValueError(f"{path}: not a readable sky encoder file ({type(err).__name__}: {err}).") from err
    if not isinstance(state, dict) or state.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a sky encoder file (made by `mlsky ulisse train-sky`).")
    if state.get("format_version") != EXPORT_VERSION:
        raise ValueError(f"{path}: sky encoder format {state.get('format_version')}; "
                         f"this mlsky reads {EXPORT_VERSION}.")
    encoder = SkyEncoder(**state["config"])
    encoder.load_state_dict(state["state_dict"], strict=True)
    return encoder.eval(), state.get("history", {})
