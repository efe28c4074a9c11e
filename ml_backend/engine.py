"""Prompt → mask behind a bounded queue: what the HTTP server calls, without any HTTP.

:class:`Engine` holds the predictor (loaded once per process), the image fetcher, the optional
draft segmenter and two executors: the predict :class:`ModelQueue` and the background warmer
that precomputes embeddings for newly imported tasks.

Load is bounded per process: at most ``max_inflight`` predict jobs are worked on at once (the
model itself runs one call at a time, under a lock) and at most ``max_queue`` wait; beyond that
:meth:`ModelQueue.try_submit` refuses at once (the server answers 503 with ``Retry-After``).
A job whose client has been answered (504) may finish in the background, still holding its
slot, so abandoned work can never pile up threads.

Example (``predictor`` a :class:`~ml_backend.predictors.BoxPredictor`)::

    engine = Engine(predictor, ImageFetcher(label_studio_url="http://ls:8080"))
    job = engine.queue.try_submit(engine.predict_tasks, tasks, xml, context, threading.Event())
    results = job.result() if job is not None else "busy"
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ml_backend.clicks import ClickMemory, Regions
from ml_backend.config import BackendConfig
from ml_backend.errors import InvalidInput
from ml_backend.images import ImageFetcher, label_studio_auth_header
from ml_backend.labeling import (
    HINT_CONTROL,
    PROPAGATED_PREFIX,
    LabelingConfig,
    Prompt,
    brush_result,
    parse_label_config,
    prompt_from_context,
)

__all__ = [
    "MAX_WARM_PENDING",
    "PROPAGATED_PREFIX",
    "Engine",
    "ModelQueue",
    "build_engine",
    "load_predictor",
]

log = logging.getLogger("ml_backend.engine")

T = TypeVar("T")

MAX_WARM_PENDING = 4096
"""Most webhook embedding jobs waiting at once; further images are skipped (logged)."""


class ModelQueue:
    """Runs predict jobs on ``max_inflight`` threads and lets at most ``max_queue`` wait.

    A job holds its slot from admission until it really ends (or is cancelled before it
    started), so work whose client already got a 504 still counts: the number of threads
    and of queued jobs stays bounded however many requests time out.

    Attributes:
        refused: jobs refused because the queue was full.
        timed_out: jobs whose caller gave up waiting (counted by the caller).
    """

    def __init__(self, max_inflight: int, max_queue: int) -> None:
        self.max_inflight = max_inflight
        self.capacity = max_inflight + max_queue
        self._executor = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="predict")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._mean_s = 1.0  # running mean of a job's duration, for Retry-After
        self.refused = 0
        self.timed_out = 0

    def try_submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Start or queue ``fn(*args)``; None when running + waiting jobs fill the capacity."""
        with self._lock:
            if self._admitted >= self.capacity:
                self.refused += 1
                return None
            self._admitted += 1
        try:
            future = self._executor.submit(self._run, fn, *args)
        except BaseException:
            self._release(None)
            raise
        # Registered before the caller wraps the future, so the slot is free again before
        # the caller's response goes out.
        future.add_done_callback(self._release)
        return future

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._running += 1
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            elapsed = time.monotonic() - start
            with self._lock:
                self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed

    def _release(self, _: object) -> None:
        with self._lock:
            self._admitted -= 1

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: mean job time × jobs ahead per thread."""
        with self._lock:
            waves = self._admitted / self.max_inflight
            return int(min(120.0, max(1.0, math.ceil(self._mean_s * waves))))

    @property
    def load(self) -> tuple[int, int]:
        """``(running, waiting)`` jobs now."""
        with self._lock:
            return self._running, self._admitted - self._running


class Engine:
    """The predictor behind a lock, the bounded predict queue and the background warmer.

    Label Studio's ML API builds a new model object per request; here the heavy model lives
    once per process and requests stay thin.

    Args:
        predictor: a ``BoxPredictor`` (``set_image`` + ``predict_box``; optional ``warm``).
        fetcher: fetches task image URLs (only from the allowed hosts and roots).
        max_inflight, max_queue: bounds of :attr:`queue`.
        draft: a :class:`~ml_backend.draft.DraftModel` answering box-less calls, or None.
        propagate_slices: a submitted slice is propagated to at most this many slices on
            each side (0: not at all).
        click_regions: regions :attr:`clicks` keeps.
        propagation_log: records :attr:`propagations` keeps.

    The defaults are :class:`~ml_backend.config.BackendConfig`'s; :func:`build_engine`
    passes a config's values.

    Attributes:
        warmed: embeddings the warmer computed.
    """

    def __init__(
        self,
        predictor: Any,
        fetcher: ImageFetcher,
        max_inflight: int = 2,
        max_queue: int = 32,
        draft: Any | None = None,
        *,
        propagate_slices: int = 8,
        click_regions: int = 256,
        propagation_log: int = 256,
    ) -> None:
        self.predictor = predictor
        self.propagate_slices = propagate_slices
        self.fetcher = fetcher
        self.draft = draft
        self.lock = threading.Lock()
        self.queue = ModelQueue(max_inflight, max_queue)
        self.warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm")
        # its own thread: a submitted slice is not queued behind an import's embeddings
        self.propagator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propagate")
        self.warmed = 0
        self._warm_pending = 0
        self._warm_lock = threading.Lock()
        self.clicks = ClickMemory(max_regions=click_regions)
        """Previous logits per (task, annotator, region), for refinement clicks."""
        self.regions = Regions(max_regions=click_regions)
        """Each (task, annotator, label)'s current region: its box and clicks so far."""
        self.feed_logits = bool(getattr(predictor, "refines_with_logits", True))
        """Whether a click is answered with the region's previous logits as ``mask_input``
        (the predictor's ``refines_with_logits``: False for the stock LiteMedSAM, which
        was never trained with a mask prompt and gets worse with it)."""
        self.propagations: deque[dict[str, Any]] = deque(maxlen=propagation_log)
        """What each submitted slice proposed: seed task, slice, proposed tasks and slices,
        stop reasons (newest last)."""

    @property
    def model_version(self) -> str:
        return str(getattr(self.predictor, "model_id", type(self.predictor).__name__))

    @property
    def warm_pending(self) -> int:
        """Images queued for the warmer and not yet done."""
        with self._warm_lock:
            return self._warm_pending

    def predict_tasks(
        self, tasks: list[Any], xml: str, context: Any, cancelled: threading.Event
    ) -> list[dict[str, Any] | list[Any]]:
        """One result per task, in order; stops early once ``cancelled`` is set (the client
        has been answered)."""
        results: list[dict[str, Any] | list[Any]] = []
        for task in tasks:
            if cancelled.is_set():
                log.info("abandoning a timed-out prediction after %d tasks", len(results))
                break
            results.append(self.predict_task(task, xml, context))
        return results

    def predict_task(
        self, task: dict[str, Any], xml: str, context: Any
    ) -> dict[str, Any] | list[Any]:
        """The prediction for one task: the box's mask, the draft's, or ``[]`` for none.

        Raises:
            InvalidInput: malformed task, context or rectangle; an image that cannot be used.
            UpstreamError: Label Studio failed to serve the image.
        """
        if not isinstance(task, dict):
            raise InvalidInput("each task must be an object")
        config = parse_label_config(xml)
        if context is not None and not isinstance(context, dict):
            raise InvalidInput("params.context must be an object")
        boxless = not context or not context.get("result")
        if boxless and self.draft is None:
            return []  # no box drawn (batch call): no prediction, not an empty one
        data = task.get("data")
        if not isinstance(data, dict) or config.image_key not in data:
            raise InvalidInput(f"task has no image under data.{config.image_key}")
        if boxless or context is None:
            return self._draft(data[config.image_key], config)
        _check_rectangle_numbers(context)
        image = self.fetcher.fetch(data[config.image_key])
        height, width = image.shape[:2]
        prompt = prompt_from_context(context, config, width, height)
        if prompt is None:
            return []
        annotator = context.get("annotator") or context.get("user") or context.get("user_id")
        owner = (str(task.get("id", "")), str(annotator or ""), prompt.label)
        prompt = self._in_region(owner, prompt)
        key = (owner[0], owner[1], prompt.region)
        with self.lock:
            self.predictor.set_image(image)
            if not prompt.points and prompt.box_xyxy is not None:
                # a box alone starts (or restarts) the region: box → mask as always
                answer = self.predictor.predict(box=list(prompt.box_xyxy))
            else:
                previous = self.clicks.get(key) if self.feed_logits else None
                answer = self.predictor.predict(
                    box=list(prompt.box_xyxy) if prompt.box_xyxy is not None else None,
                    points=[list(p) for p in prompt.points],
                    labels=list(prompt.labels),
                    mask_input=previous,
                )
            self.clicks.put(key, answer.logits)
        mask, score = answer.mask, answer.score
        result = brush_result(mask, prompt.label, config.brush_name, config.image_name)
        result["score"] = float(score)
        # one id per region: Label Studio's accept replaces the region's earlier mask with
        # the refined one (an existing area with the suggestion's id is overwritten)
        result["id"] = _region_id(key)
        return {"result": [result], "score": float(score), "model_version": self.model_version}

    def _in_region(self, owner: tuple[str, str, str], prompt: Prompt) -> Prompt:
        """The prompt with its region's box and earlier clicks (:class:`Regions`).

        A box starts the ``(task, annotator, label)`` owner's region; clicks without a box
        (what Label Studio's page sends) refine the owner's last box, with every click on it
        so far. Clicks before any box stay clicks alone.
        """
        if prompt.box_xyxy is not None:
            self.regions.start(owner, prompt.box_xyxy, prompt.region, prompt.points, prompt.labels)
            return prompt
        state = self.regions.click(owner, prompt.points, prompt.labels)
        if state is None:
            return prompt
        return dataclasses.replace(
            prompt,
            box_xyxy=state.box_xyxy,
            points=state.points,
            labels=state.labels,
            region=state.region,
        )

    def _draft(self, url: Any, config: LabelingConfig) -> dict[str, Any] | list[Any]:
        """The draft segmenter's whole-image mask (prompt-free pre-annotation), or ``[]``
        when it finds nothing."""
        draft = self.draft
        if draft is None:
            return []
        mask = draft.predict(self.fetcher.fetch(url))
        if not mask.any():
            return []
        label = config.brush_labels[0] if config.brush_labels else "Organ"
        result = brush_result(mask, label, config.brush_name, config.image_name)
        return {"result": [result], "model_version": draft.model_version}

    def warm_tasks(self, tasks: list[Any], image_key: str | None) -> int:
        """Queue embedding precomputation for the tasks' images; returns how many queued."""
        queued = skipped = 0
        for task in tasks:
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict):
                continue
            keys = [image_key] if image_key else list(data)
            url = next((data[k] for k in keys if isinstance(data.get(k), str)), None)
            if url is None:
                continue
            with self._warm_lock:
                if self._warm_pending >= MAX_WARM_PENDING:
                    skipped += 1
                    continue
                self._warm_pending += 1
            self.warmer.submit(self._warm_one, url).add_done_callback(self._warm_done)
            queued += 1
        if skipped:
            log.warning("warm queue full: %d images not precomputed", skipped)
        return queued

    def _warm_done(self, _: object) -> None:
        with self._warm_lock:
            self._warm_pending -= 1

    def _warm_one(self, url: str) -> None:
        try:
            image = self.fetcher.fetch(url)
            warm = getattr(self.predictor, "warm", None)
            if warm is not None and warm(image):
                self.warmed += 1
        except Exception:  # a bad task must not kill the warmer; the log says which
            log.warning("could not precompute the embedding for %.200s", url, exc_info=True)

    # -- 3-D propagation of a submitted slice ------------------------------------------
    def propagate_submitted(self, body: dict[str, Any]) -> bool:
        """Queue the propagation of an ``ANNOTATION_CREATED``/``UPDATED`` webhook's mask to
        the neighbouring slices of its volume (background thread); False when the task was
        not imported from a volume or carries nothing to propagate."""
        task = body.get("task")
        annotation = body.get("annotation")
        if not isinstance(task, dict) or not isinstance(annotation, dict):
            return False
        data = task.get("data")
        meta = data.get("medcrowd") if isinstance(data, dict) else None
        if not isinstance(meta, dict) or not {"source", "axis", "index"} <= set(meta):
            return False
        if annotation.get("was_cancelled") or self.propagate_slices < 1:
            return False
        self.propagator.submit(self._propagate_logged, body)
        return True

    def _propagate_logged(self, body: dict[str, Any]) -> None:
        try:
            record = self.propagate_annotation(body)
            if record is not None:
                self.propagations.append(record)
                log.info("propagated task %s to %s", record["task"], record["proposed_slices"])
        except Exception:  # a bad webhook must not kill the worker thread; the log says why
            log.warning("propagation failed", exc_info=True)

    def propagate_annotation(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Propagate a submitted slice mask and store proposals on the neighbours' tasks.

        Returns the record kept in :attr:`propagations`, or None when there is nothing to do.

        Raises:
            InvalidInput, UpstreamError: the payload, Label Studio or an image failed.
        """
        from ml_backend.propagation import Propagator
        from ml_backend.rle import rle_to_mask

        task, annotation = body["task"], body["annotation"]
        meta = task["data"]["medcrowd"]
        raw_project = body.get("project")
        project: dict[str, Any] = raw_project if isinstance(raw_project, dict) else {}
        project_id = project.get("id") or task.get("project")
        xml = project.get("label_config")
        if not isinstance(xml, str) or project_id is None:
            raise InvalidInput("the webhook carries no project id / label_config")
        config = parse_label_config(xml)
        brushes = [
            r
            for r in annotation.get("result") or []
            if isinstance(r, dict)
            and r.get("type") == "brushlabels"
            and r.get("from_name") != HINT_CONTROL
            and isinstance(r.get("value"), dict)
            and r["value"].get("format", "rle") == "rle"
        ]
        if not brushes:
            return None
        height = int(brushes[0]["original_height"])
        width = int(brushes[0]["original_width"])
        label = (brushes[0]["value"].get("brushlabels") or ["Organ"])[0]
        seed = np.zeros((height, width), dtype=bool)
        for region in brushes:
            seed |= rle_to_mask(region["value"]["rle"], height, width)
        if not seed.any():
            return None
        client = _StudioTasks(self.fetcher)
        index = int(meta["index"])
        by_index = {}
        for other in client.project_tasks(int(project_id)):
            other_meta = (other.get("data") or {}).get("medcrowd")
            if (
                isinstance(other_meta, dict)
                and other_meta.get("source") == meta["source"]
                and other_meta.get("axis") == meta["axis"]
            ):
                by_index[int(other_meta["index"])] = other
        by_index[index] = task
        indices = _contiguous(sorted(by_index), index, self.propagate_slices)
        images = [self.fetcher.fetch(by_index[z]["data"][config.image_key]) for z in indices]
        stack = np.stack([_gray_u8(im) for im in images])
        if stack.shape[1:] != seed.shape:
            raise InvalidInput(f"the mask is {width}×{height}, the slices {stack.shape[1:]}")
        # the lock is held per slice, not for the whole walk: volunteers' boxes and clicks
        # interleave with a propagation instead of waiting for it
        result = Propagator(max_slices=self.propagate_slices).run(
            _LockedPredictor(self.predictor, self.lock), stack, indices.index(index), None,
            seed_mask=seed,
        )  # fmt: skip
        version = PROPAGATED_PREFIX + self.model_version
        proposed = []
        for local in result.proposed:
            z = indices[local]
            if z == index:
                continue
            target = int(by_index[z]["id"])
            region = brush_result(result.masks[local], label, config.brush_name, config.image_name)
            client.replace_prediction(target, version, [region], 1.0)
            proposed.append({"task": target, "index": z, "pixels": int(result.masks[local].sum())})
        return {
            "task": task.get("id"),
            "annotation": annotation.get("id"),
            "source": meta["source"],
            "axis": meta["axis"],
            "index": index,
            "model_version": version,
            "proposed": proposed,
            "proposed_slices": [p["index"] for p in proposed],
            "stops": [s.reason for s in result.steps if not s.accepted],
        }


class _LockedPredictor:
    """``set_image`` + ``predict`` as one step under the engine's lock (the image is kept
    until ``predict``), so another thread may use the predictor in between."""

    def __init__(self, predictor: Any, lock: threading.Lock) -> None:
        self._predictor = predictor
        self._lock = lock
        self._image: Any = None

    def set_image(self, image: Any) -> None:
        self._image = image

    def predict(self, **prompts: Any) -> Any:
        with self._lock:
            self._predictor.set_image(self._image)
            return self._predictor.predict(**prompts)


class _StudioTasks:
    """The few Label Studio calls propagation needs: a project's tasks, a task's
    predictions. The backend's own token and host (``ImageFetcher``'s)."""

    def __init__(self, fetcher: ImageFetcher, timeout_s: float = 30.0) -> None:
        if not fetcher.label_studio_url or not fetcher.token:
            raise InvalidInput(
                "propagation needs --label-studio-url and --label-studio-token to store proposals"
            )
        self.url = fetcher.label_studio_url
        self.token = fetcher.token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        from ml_backend.errors import UpstreamError

        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                headers = label_studio_auth_header(client, self.url, self.token)
                resp = client.request(method, self.url + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Label Studio unreachable: {exc}") from exc
        if resp.status_code >= 400 and not (method == "DELETE" and resp.status_code == 404):
            raise UpstreamError(f"Label Studio answered {resp.status_code} to {method} {path}")
        return resp.json() if resp.content and method != "DELETE" else None

    def project_tasks(self, project_id: int) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call(
                "GET",
                "/api/tasks",
                params={"project": project_id, "page": page, "page_size": 500, "fields": "all"},
            )
            batch = body.get("tasks", []) if isinstance(body, dict) else body or []
            tasks.extend(batch)
            total = body.get("total", len(tasks)) if isinstance(body, dict) else len(tasks)
            if not batch or len(tasks) >= total:
                return tasks
            page += 1

    def replace_prediction(
        self, task_id: int, version: str, result: list[dict[str, Any]], score: float
    ) -> None:
        """Delete this task's earlier proposals (``propagated-``), then store the new one."""
        existing = self._call("GET", "/api/predictions", params={"task": task_id}) or []
        for old in existing:
            if str(old.get("model_version") or "").startswith(PROPAGATED_PREFIX):
                self._call("DELETE", f"/api/predictions/{old['id']}/")
        self._call(
            "POST",
            "/api/predictions",
            json={"task": task_id, "result": result, "model_version": version, "score": score},
        )


def _region_id(key: tuple[str, str, str]) -> str:
    """A Label Studio region id (10 characters) that stays the same for one region."""
    return "mc" + hashlib.sha1("\x1f".join(key).encode(), usedforsecurity=False).hexdigest()[:8]


def _contiguous(indices: list[int], index: int, reach: int) -> list[int]:
    """The run of consecutive slice indices around ``index``, at most ``reach`` each side."""
    present = set(indices)
    low = index
    while low - 1 in present and index - (low - 1) <= reach:
        low -= 1
    high = index
    while high + 1 in present and (high + 1) - index <= reach:
        high += 1
    return list(range(low, high + 1))


def _gray_u8(image: Any) -> Any:
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2) if array.shape[2] >= 3 else array[..., 0]
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return array


def build_engine(config: BackendConfig, predictor: Any | None = None) -> Engine:
    """The engine ``config`` describes; loads the predictor (and draft model) unless given.

    Args:
        config: validated settings.
        predictor: an already-built ``BoxPredictor`` (tests and benchmarks share one); None
            builds ``config.predictor`` on ``config.device`` (:func:`load_predictor`).

    Raises:
        ValueError: unknown predictor name.
        ModelUnavailable: weights or draft model missing or unusable, device unavailable.
    """
    draft = None
    if config.draft_model is not None:  # first: a bad draft file fails before a slow model load
        from ml_backend.draft import DraftModel

        draft = DraftModel(config.draft_model, device=config.device)
    if predictor is None:
        predictor = load_predictor(config)
    fetcher = ImageFetcher(
        label_studio_url=config.label_studio_url,
        token=config.label_studio_token,
        local_files_root=config.local_files_root,
        allowed_roots=list(config.allowed_roots),
        max_pixels=config.max_image_pixels,
    )
    return Engine(
        predictor,
        fetcher,
        config.max_inflight,
        config.max_queue,
        draft,
        propagate_slices=config.propagate_slices,
        click_regions=config.click_regions,
        propagation_log=config.propagation_log,
    )


def load_predictor(config: BackendConfig) -> Any:
    """Build ``config.predictor`` once for this process, one process at a time per cache.

    Workers sharing a cache directory load their models one at a time, so the first exports
    the ONNX files and the others find them verified instead of exporting in parallel.
    """
    from ml_backend.cache import EmbeddingCache
    from ml_backend.predictors import get_predictor

    cache_dir = config.cache_dir
    with _exclusive(cache_dir / ".model-load.lock" if cache_dir else None):
        return get_predictor(
            config.predictor,
            device=config.device,
            checkpoint=config.checkpoint,
            cache=EmbeddingCache(
                max_bytes=config.cache_bytes,
                directory=cache_dir / "embeddings" if cache_dir else None,
            ),
            cache_dir=cache_dir,
        )


@contextmanager
def _exclusive(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (POSIX ``flock``); a no-op without a path or fcntl."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _short(value: object) -> str:
    """A repr short enough for an error message (huge ints cannot even be repr'd)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_rectangle_numbers(context: dict[str, Any]) -> None:
    """Rectangle coordinates must be finite JSON numbers, before any arithmetic on them."""
    regions = context.get("result")
    if not isinstance(regions, list):
        return  # prompt_from_context says what is wrong
    for region in regions:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        value = region.get("value")
        if not isinstance(value, dict):
            continue
        for key in ("x", "y", "width", "height", "rotation"):
            raw = value.get(key)
            if raw is None and key == "rotation":
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise InvalidInput(f"rectangle value {key!r} must be a number, got {_short(raw)}")
            try:
                finite = math.isfinite(float(raw))
            except OverflowError:
                finite = False
            if not finite:
                raise InvalidInput(
                    f"rectangle value {key!r} must be a finite number, got {_short(raw)}"
                )
