"""Training on several processes with DistributedDataParallel, as started by ``torchrun``.

.. code-block:: bash

    torchrun --nproc_per_node=4 -m mlsky alma train --data cubes/ --out weights/

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and the rendezvous address; :func:`init_from_env`
joins the process group (``nccl`` on GPUs, one per process; ``gloo`` on CPUs). Each rank reads
its own shards of the data set (:mod:`mlsky.alma.finder.data`); gradients are averaged over the
ranks, weighted so that a step is the mean over the whole effective batch (the sum of the
ranks' local batches), as one process with that batch would take. Only rank 0 writes
checkpoints, ``pipeline.json`` and the log, and tunes the thresholds; the others wait for it.

BatchNorm layers become :class:`~torch.nn.SyncBatchNorm` on GPUs; PyTorch offers no
synchronised BatchNorm on CPUs, so there each rank normalises with its local batch.

When a rank dies, the collective operations of the others fail (or ``torchrun`` stops them);
they stop with :class:`DistributedError`, saying so. Checkpoints are only ever renamed into
place complete, so the last one stays usable for a resume.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from datetime import timedelta
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


class DistributedError(RuntimeError):
    """Another rank of a distributed run stopped, so this one cannot go on."""


def init_from_env(timeout_s: float = 1800.0) -> tuple[int, int]:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); return ``(rank, world_size)``.

    ``timeout_s`` bounds how long a rank waits in a collective operation for the others (rank 0
    tunes the thresholds while the others wait).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        signal.signal(signal.SIGTERM, _stopped_by_signal)
    return rank(), world_size()


def _stopped_by_signal(signum, frame):
    raise DistributedError(f"rank {rank()} of {world_size()}: stopped by torchrun because another rank failed")


def is_distributed() -> bool:
    """Whether this process is one rank of several."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes checkpoints and logs (rank 0)."""
    return rank() == 0


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_int(value: int) -> list[int]:
    """``value`` of every rank, in rank order (``[value]`` when not distributed)."""
    if not is_distributed():
        return [int(value)]
    out = [torch.zeros(1, dtype=torch.int64, device=_device()) for _ in range(world_size())]
    dist.all_gather(out, torch.tensor([int(value)], dtype=torch.int64, device=_device()))
    return [int(t.item()) for t in out]


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """The sum over ranks of a float array (the array itself when not distributed)."""
    values = np.asarray(values, np.float64)
    if not is_distributed():
        return values
    t = torch.from_numpy(values.copy()).to(_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def global_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation along axis 0 over every rank's rows (as :func:`numpy.mean` / ``std``)."""
    if not is_distributed():
        return x.mean(axis=0), x.std(axis=0)
    x = np.asarray(x, np.float64)
    sums = all_reduce_sum(np.concatenate([[len(x)], x.sum(axis=0).ravel(), (x**2).sum(axis=0).ravel()]))
    n, k = sums[0], x[0].size if x.ndim > 1 else 1
    mean = sums[1 : 1 + k] / n
    var = np.maximum(sums[1 + k :] / n - mean**2, 0.0)
    shape = x.shape[1:]
    return mean.reshape(shape).astype(np.float32), np.sqrt(var).reshape(shape).astype(np.float32)


def barrier() -> None:
    """Wait for every rank (nothing when not distributed)."""
    if is_distributed():
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed (itself otherwise)."""
    if not is_distributed():
        return model
    if dist.get_backend() == "nccl":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    return nn.parallel.DistributedDataParallel(model)


@contextlib.contextmanager
def stop_cleanly() -> Iterator[None]:
    """Turn the failure of a collective operation (a peer that died) into :class:`DistributedError`."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as err:
        if not is_distributed() or not _is_collective_failure(err):
            raise
        # gloo says e.g. "[.../pair.cc:561] Connection closed by peer [127.0.0.1]:35719. This is ...":
        # keep its first sentence, without the source location.
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip()) or type(err).__name__
        first = text.splitlines()[0].split(". ")[0]
        raise DistributedError(
            f"rank {rank()} of {world_size()}: another rank stopped ({first[:200]}); "
            "the last complete checkpoint is kept, resume by running the same command"
        ) from None


def _is_collective_failure(err: RuntimeError) -> bool:
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(err).lower()
    return isinstance(err, backend_error) or any(w in text for w in ("gloo", "nccl", "connection", "timed out", "peer"))


def shutdown() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        # The run has said why it stops; a SIGTERM from torchrun while exiting needs no message.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
