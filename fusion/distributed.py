"""Batch fusion of very large crowds on a Dask cluster (``dask.distributed``).

:class:`DaskCrowdStaple` is :class:`~fusion.crowd_staple.CrowdStaple` with its chunk steps
mapped over Dask workers instead of run one after the other here. The chunks (vote-pattern
rows, posteriors, task priors) live on the workers for the whole EM; each iteration sends
every chunk the annotator rates (2 × A floats) and gathers back its annotator statistics,
which this process sums in chunk order exactly as the in-process path does. The result is
therefore identical bit for bit to ``CrowdStaple(...same parameters...).fit_predict``.

:func:`map_tasks` runs an independent per-task function (per-task STAPLE, votes) over the
same kind of cluster.

Dask is an optional dependency (``pip install medcrowd[scale]``); it is imported only when
a cluster is used.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fusion.crowd_staple import CrowdFusionResult, CrowdStaple, _ChunkInput

__all__ = ["DaskCrowdStaple", "dask_client", "map_tasks", "parse_scheduler"]

_In = TypeVar("_In")
_Out = TypeVar("_Out")

_ADDRESS_SCHEMES = ("tcp://", "tls://")


def parse_scheduler(value: str | None) -> str | None:
    """Check a ``--scheduler`` value: None / ``"none"`` (in-process, returned as None),
    ``"local"`` (a LocalCluster for the call), ``"auto"`` (Dask's configured
    ``scheduler-address``, e.g. env ``DASK_SCHEDULER_ADDRESS``, else local), or a scheduler
    address ``tcp://host:port`` / ``tls://host:port``.

    Raises:
        ValueError: anything else.
    """
    if value is None or value.strip().lower() in ("", "none"):
        return None
    text = value.strip()
    if text.lower() in ("local", "auto"):
        return text.lower()
    if text.startswith(_ADDRESS_SCHEMES):
        host_port = text.split("://", 1)[1]
        host, _, port = host_port.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return text
    raise ValueError(
        f"--scheduler must be none, local, auto or tcp://host:port (tls:// too), got {value!r}"
    )


@contextmanager
def dask_client(
    scheduler: str | None = "local", n_workers: int | None = None, threads_per_worker: int = 1
) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler`` (an address), or to a LocalCluster started
    for the ``with`` block and closed after it (``"local"``, or ``"auto"`` when Dask has no
    ``scheduler-address`` configured).

    Raises:
        RuntimeError: dask.distributed is not installed, or the scheduler cannot be reached.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "Dask is not installed: pip install 'medcrowd[scale]' (dask[distributed])"
        ) from exc
    address = scheduler
    if scheduler in (None, "local", "auto"):
        configured = dask.config.get("scheduler-address", None) if scheduler == "auto" else None
        address = configured or None
    if address:
        try:
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@dataclass(frozen=True)
class _Slot:
    """Where a packed array lives: ``buffers[dtype][start : start + size]``, reshaped."""

    dtype: str
    start: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Packed:
    """A nested list/tuple/dict whose numpy arrays were copied into one flat buffer per dtype.

    Dask sends every array as a message frame of its own; tens of thousands of small masks
    then cost more than their bytes. Packing is a transport detail only: :func:`_unpack`
    gives back arrays with the same dtype, shape and bytes (as views into the buffers).
    """

    skeleton: Any
    buffers: dict[str, np.ndarray]


def _pack(obj: Any) -> _Packed:
    arrays: list[np.ndarray] = []
    offsets: dict[str, int] = {}

    def strip(o: Any) -> Any:
        if isinstance(o, np.ndarray) and not o.dtype.hasobject:
            key = o.dtype.str
            slot = _Slot(key, offsets.get(key, 0), tuple(o.shape))
            offsets[key] = slot.start + o.size
            arrays.append(o)
            return slot
        if isinstance(o, list):
            return [strip(x) for x in o]
        if isinstance(o, tuple):
            return tuple(strip(x) for x in o)
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items()}
        return o

    skeleton = strip(obj)
    buffers = {
        key: np.concatenate([a.ravel() for a in arrays if a.dtype.str == key]) for key in offsets
    }
    return _Packed(skeleton, buffers)


def _unpack(packed: _Packed) -> Any:
    def fill(o: Any) -> Any:
        if isinstance(o, _Slot):
            size = int(np.prod(o.shape, dtype=np.int64))
            return packed.buffers[o.dtype][o.start : o.start + size].reshape(o.shape)
        if isinstance(o, list):
            return [fill(x) for x in o]
        if isinstance(o, tuple):
            return tuple(fill(x) for x in o)
        if isinstance(o, dict):
            return {k: fill(v) for k, v in o.items()}
        return o

    return fill(packed.skeleton)


class _ChunkGroup:
    """A run of consecutive chunks held on one Dask worker for the whole fit (an actor)."""

    def __init__(self, packed_inputs: list[tuple[int, list[list[Hashable]], _Packed]]) -> None:
        self.states: list[Any] = []
        for start, annotators, packed in packed_inputs:
            tasks, gold = _unpack(packed)
            self.states.append(_ChunkInput(start, tasks, annotators, gold))

    def call(self, fn: Callable[..., tuple[Any, Any]], *args: Any) -> _Packed:
        outs = []
        for i, state in enumerate(self.states):
            self.states[i], out = fn(state, *args)
            outs.append(out)
        return _pack(outs)


class _DaskRunner:
    """Map the chunk steps over Dask workers.

    The chunks are split into one run of consecutive chunks per worker, held there by an
    actor: a step is then one direct call per worker (no scheduler round trip, no per-chunk
    message), and the results come back in chunk order for the ordered reduction.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def put(self, inputs: list[_ChunkInput]) -> list[Any]:
        workers = sorted(self.client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("the Dask cluster has no workers")
        n = len(inputs)
        bounds = [round(k * n / len(workers)) for k in range(len(workers) + 1)]
        groups = []
        for worker, lo, hi in zip(workers, bounds[:-1], bounds[1:], strict=True):
            if lo == hi:
                continue
            packed = [(i.start, i.annotators, _pack([i.tasks, i.gold])) for i in inputs[lo:hi]]
            (data,) = self.client.scatter([packed], workers=[worker], hash=False)
            groups.append(
                self.client.submit(_ChunkGroup, data, actor=True, workers=[worker], pure=False)
            )
        return [g.result() for g in groups]

    def map(
        self, fn: Callable[..., tuple[Any, _Out]], chunks: list[Any], *args: Any
    ) -> tuple[list[Any], list[_Out]]:
        pending = [group.call(fn, *args) for group in chunks]
        return chunks, [out for p in pending for out in _unpack(p.result())]


@dataclass
class DaskCrowdStaple(CrowdStaple):
    """Crowd-wide STAPLE (see :class:`~fusion.crowd_staple.CrowdStaple` for the algorithm
    and every other parameter) with its chunks of ``chunk_size`` tasks on a Dask cluster.

    Steps:
        1. Scatter the chunks' masks to the workers; each worker builds its chunks' vote-
           pattern rows (the O(voxels) part) and keeps them.
        2. Every EM iteration: send the new annotator rates to every chunk; each runs its
           E-step and returns its M-step sums (2 × A floats); sum them here in chunk order.
        3. Guard, reported rates and masks likewise; gather the fused masks at the end.

    Same parameters ⇒ the same masks, probabilities, rates, priors and iteration count as
    ``CrowdStaple.fit_predict``, bit for bit (``tests/fusion/test_distributed.py``).

    Args:
        scheduler_address: ``tcp://host:port`` of a running ``dask.distributed`` scheduler;
            None starts a LocalCluster for each call and closes it afterwards.
        n_workers: LocalCluster worker processes (None: Dask's default for this machine).
        threads_per_worker: LocalCluster threads per worker.

    Example:
        >>> import numpy as np
        >>> truth = np.zeros((16, 16), bool); truth[4:12, 4:12] = True
        >>> tasks = [np.stack([truth, truth, ~truth])] * 6
        >>> ids = [["a", "b", "c"]] * 6
        >>> dask_fit = DaskCrowdStaple(chunk_size=2, n_workers=2)
        >>> fused = dask_fit.fit_predict(tasks, ids)  # doctest: +SKIP
        >>> same = CrowdStaple(chunk_size=2).fit_predict(tasks, ids)
        >>> all((a == b).all() for a, b in zip(fused.masks, same.masks))  # doctest: +SKIP
        True
    """

    scheduler_address: str | None = None
    n_workers: int | None = None
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scheduler_address is not None:
            parsed = parse_scheduler(self.scheduler_address)
            if parsed in (None, "local", "auto"):
                raise ValueError(
                    f"scheduler_address must be tcp://host:port, got {self.scheduler_address!r}"
                    " (None starts a LocalCluster)"
                )
        if self.n_workers is not None and self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {self.n_workers}")
        if self.threads_per_worker < 1:
            raise ValueError(f"threads_per_worker must be >= 1, got {self.threads_per_worker}")

    def fit_predict(
        self,
        tasks: Sequence[npt.ArrayLike],
        annotators: Sequence[Sequence[Hashable]],
        gold: Mapping[int, npt.ArrayLike] | None = None,
        client: Any | None = None,
    ) -> CrowdFusionResult:
        """Fuse every task of a crowd on the cluster (arguments as ``CrowdStaple``).

        Args:
            client: an open ``distributed.Client`` to use instead of ``scheduler_address``
                or a LocalCluster.

        Raises:
            ValueError: as ``CrowdStaple.fit_predict`` (raised here from the workers).
            RuntimeError: the scheduler cannot be reached, or Dask is not installed.
        """
        if client is not None:
            return self._fit(_DaskRunner(client), tasks, annotators, gold)
        with dask_client(
            self.scheduler_address or "local", self.n_workers, self.threads_per_worker
        ) as own:
            return self._fit(_DaskRunner(own), tasks, annotators, gold)


def map_tasks(
    fn: Callable[[_In], _Out],
    items: Sequence[_In],
    scheduler: str | None = "local",
    client: Any | None = None,
    batch_size: int = 64,
) -> list[_Out]:
    """``[fn(item) for item in items]`` on a Dask cluster, in order.

    Items are sent in batches of ``batch_size`` (one Dask task each) so that small tasks do
    not drown in scheduling overhead. ``fn`` must be picklable (a module-level function).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]

    def run(c: Any) -> list[_Out]:
        futures = c.map(_apply_batch, [fn] * len(batches), batches, pure=False)
        return [out for batch in c.gather(futures) for out in batch]

    if client is not None:
        return run(client)
    with dask_client(scheduler) as own:
        return run(own)


def _apply_batch(fn: Callable[[_In], _Out], batch: list[_In]) -> list[_Out]:
    return [fn(item) for item in batch]
