"""Simulating a training set on a Dask cluster: one task per shard.

``make_dataset(..., scheduler=ADDRESS)`` (``mlsky alma simulate --scheduler ADDRESS``) sends
every shard still to be made to a running Dask scheduler, as one task each; ``"local"`` starts
a :class:`~distributed.LocalCluster` on this machine. The shards and the manifest are the same,
byte for byte, as with the processes of one machine: every cube's seed depends only on the
data set's seed and the cube's index. Workers write the shards themselves, so they must see
the output folder (a shared file system, as on any HPC cluster).

Needs the ``dask`` extra: ``pip install "mlsky[dask]"`` (``dask`` and ``distributed``).

Clusters of a batch system come from ``dask-jobqueue`` (Slurm, PBS, SGE, LSF...): start one,
then give its scheduler's address to mlsky.

.. code-block:: python

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=4, processes=4, memory="16GB", walltime="02:00:00")
    cluster.scale(jobs=10)             # 40 workers, each simulating one shard at a time
    print(cluster.scheduler_address)   # tcp://10.0.0.5:8786

.. code-block:: bash

    mlsky alma simulate --n 20000 --out /scratch/alma_set --scheduler tcp://10.0.0.5:8786

or, from the command line alone: ``dask scheduler`` on one node, ``dask worker
tcp://NODE:8786 --nthreads 1`` on each other node (one thread per worker: the FFTs of a cube
already fill a core, and two shards at once double the memory).

The paper's scale, projected from measured numbers
--------------------------------------------------
Measured once on the development machine: 2 CPU cores shared with other work (load 6 to 8),
so the numbers are noisy and on the low side (``benchmarks/alma_simulate.py --dask`` and
``benchmarks/alma_train.py``):

- one 128 x 256 x 256 cube: 0.54 s to simulate in one process; with the shards written, 2
  worker processes made 0.70 cubes/s, i.e. 0.35 cubes/s per worker;
- disk: 16.9 MB per cube in shards (float16), 67.4 MB more as FITS with ``--fits``;
- memory: 1.3 GB peak per worker with shards of 8 cubes;
- a Dask ``LocalCluster`` of 2 workers made 0.17 cubes/s on 16 cubes: starting the cluster and
  making the gridded weights once in each new worker process cost seconds that a set of
  20,000 cubes amortises, but 16 do not;
- training, one epoch of Blobs Finder, Deep GRU and one of the four ResNets at the ``paper``
  sizes, inputs built from the shards included: 0.52 cubes/s in one CPU process; 2-process DDP
  (gloo) on the same 2 busy cores: 0.37 cubes/s (speed-up 0.70x: two ranks compete for two
  shared cores, so this measures the overhead of DDP, not the gain of a second machine).

For the paper's 20,000 cubes of 128 x 256 x 256:

- shards: 20,000 x 16.9 MB = 338 GB (the paper's 340 GB); with ``--fits``, 1.35 TB more;
- simulation on N Dask workers of that speed: 20,000 / (0.35 N) s -- 16 h on 1, 1.0 h on 16,
  15 min on 64, 4 min on 256, where the shared file system must then take 338 GB in 4 min
  (1.5 GB/s), the likely limit;
- training on N GPUs: an epoch takes 20,000 / (r N e) s, with r the cubes/s of one GPU and
  e the DDP efficiency. No GPU was available to measure r; ``python benchmarks/alma_train.py
  --shape 128 256 256 --scale paper`` on a GPU machine prints it. One CPU core gives
  r = 0.52, i.e. 10.7 h per epoch: the paper's 20,000 cubes are for GPUs.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from mlsky.alma.sim.dataset import DatasetError


class SchedulerError(DatasetError):
    """The Dask scheduler cannot be reached, or Dask is not installed."""


def run_on_dask(func: Callable, jobs: Iterable, scheduler: str, *, workers: int | None = None,
                timeout: float = 30.0, processes: bool = True) -> Iterator:
    """Run ``func`` on every job on a Dask cluster; yield the results as the tasks finish.

    Parameters
    ----------
    func, jobs
        A picklable function and its arguments, one task each.
    scheduler
        Address of a running scheduler (``tcp://host:8786``), or ``"local"`` for a
        :class:`~distributed.LocalCluster` of ``workers`` single-threaded workers.
    workers
        Workers of the local cluster (default: every core).
    timeout
        Seconds to wait for the scheduler to answer.
    processes
        Whether the local cluster's workers are processes (threads otherwise).

    Raises
    ------
    SchedulerError
        Dask is missing, or the scheduler did not answer within ``timeout``.
    """
    dd = _distributed()
    Client, LocalCluster, as_completed = dd.Client, dd.LocalCluster, dd.as_completed
    jobs = list(jobs)
    if scheduler == "local":
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield from _results(client, func, jobs, as_completed)
        return
    client = _connect(Client, scheduler, timeout)
    with client:
        yield from _results(client, func, jobs, as_completed)


def _results(client, func: Callable, jobs: list, as_completed) -> Iterator:
    # pure=False: a job is never taken for another one's cached result.
    futures = client.map(func, jobs, pure=False)
    for future in as_completed(futures):
        yield future.result()


def _connect(Client, scheduler: str, timeout: float):
    try:
        return Client(scheduler, timeout=f"{timeout}s")
    except (OSError, ValueError, TypeError) as err:
        raise SchedulerError(
            f"the Dask scheduler {scheduler} did not answer within {timeout:g} s ({type(err).__name__}); "
            "check the address (tcp://HOST:8786) and that the scheduler runs"
        ) from None


def check_scheduler(scheduler: str, timeout: float = 30.0) -> None:
    """Connect to a Dask scheduler and disconnect: fail early, before any file is written.

    Raises
    ------
    SchedulerError
        Dask is missing, or the scheduler did not answer within ``timeout``.
    """
    _connect(_distributed().Client, scheduler, timeout).close()


def _distributed():
    try:
        import distributed
    except ImportError as err:
        raise SchedulerError('simulating on Dask needs the dask extra: pip install "mlsky[dask]"') from err
    return distributed
