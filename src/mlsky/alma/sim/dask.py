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
