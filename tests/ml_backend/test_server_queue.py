"""Back-pressure: the bounded predict queue (503 + Retry-After) and request timeouts (504).

Saturation is provoked for real, two ways:

* an image host that holds its answers (``ImageHost.hold``): requests stop inside the
  backend's real image fetch, so "running" and "queued" are exact, not a race;
* a burst of concurrent cold requests against the real LiteMedSAM predictor: each cold image
  costs a full image-encoder pass (about a second on 2 CPU cores), so a burst sent at once
  overruns a queue of one.
"""

from __future__ import annotations

import base64
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from medcrowd.embedded import free_port
from ml_backend.config import BackendConfig
from ml_backend.images import decode_image
from ml_backend.predictors import LiteMedSAMPredictor
from ml_backend.rle import rle_to_mask
from ml_backend.server import create_app
from tests.helpers import XML, ImageHost, ThreadedServer, box_context

AUTH = ("labelstudio", secrets.token_urlsafe(12))


@contextmanager
def serve(predictor: Any, **settings: Any) -> Iterator[tuple[httpx.Client, Any]]:
    port = free_port()
    settings.setdefault("warm_on_import", False)
    config = BackendConfig(port=port, basic_auth=AUTH, **settings)
    app = create_app(config, predictor=predictor)
    with ThreadedServer(app, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=AUTH, timeout=120) as client:
            yield client, app.state.engine


def body(url: str, box: list[float], width: int, height: int) -> dict[str, Any]:
    return {
        "tasks": [{"id": 1, "data": {"image": url}}],
        "label_config": XML,
        "params": {"context": box_context(box, width, height)},
    }


def upload(i: int) -> dict[str, Any]:
    """A predict body for upload ``i`` on the held host (all are the 225×155 demo slice)."""
    return body(f"/data/upload/{i}/slice.png", [20, 20, 120, 120], 225, 155)


@dataclass(frozen=True)
class Cold:
    """A real image as the backend decodes it, its local-files URL and a box on it."""

    url: str
    image: np.ndarray
    box: list[float]

    def body(self) -> dict[str, Any]:
        height, width = self.image.shape[:2]
        return body(self.url, self.box, width, height)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def health(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/health")
    assert resp.status_code == 200
    return dict(resp.json())


def predict_threads() -> int:
    return sum(t.name.startswith("predict") for t in threading.enumerate())


@pytest.fixture(scope="module")
def cold_images(shared_data: Path) -> list[Cold]:
    """9 distinct real EM slices (512×512), each with a box around its centre."""
    out = []
    for i in range(9):
        path = shared_data / "isbi2012_em" / "train" / "image" / f"{i}.png"
        image = decode_image(path.read_bytes(), 8192 * 8192)
        rel = path.relative_to(shared_data).as_posix()
        out.append(Cold(f"/data/local-files/?d={rel}", image, [156.0, 156.0, 356.0, 356.0]))
    return out


@pytest.fixture()
def held_host(shared_data: Path) -> Iterator[ImageHost]:
    png = (shared_data / "sammed2d_demo" / "images" / "s0619_32.png").read_bytes()
    host = ImageHost(files={f"{i}/slice.png": png for i in range(20)})
    host.hold()
    yield host
    host.close()


def test_full_queue_answers_503_at_once(lite: LiteMedSAMPredictor, held_host: ImageHost) -> None:
    """1 running + 1 queued fill the capacity; the third request is refused immediately."""
    with (
        serve(lite, label_studio_url=held_host.url, max_inflight=1, max_queue=1) as (client, _),
        ThreadPoolExecutor(2) as pool,
    ):
        first = pool.submit(client.post, "/predict", json=upload(0))
        assert held_host.arrived.acquire(timeout=60), "the first request never reached the host"
        second = pool.submit(client.post, "/predict", json=upload(1))
        wait_for(lambda: health(client)["queued"] == 1, "the second request to queue")
        state = health(client)  # /health answers while the model threads are busy
        assert (state["inflight"], state["queued"]) == (1, 1)

        # Answered while both admitted requests are still held: the refusal did not wait
        # for a slot, and the refused request never reached the image host.
        third = client.post("/predict", json=upload(2))
        assert third.status_code == 503, third.text
        assert "busy" in third.json()["error"]
        assert int(third.headers["retry-after"]) >= 1
        assert not first.done() and not second.done()
        assert [path for path, _ in held_host.hits] == ["/data/upload/0/slice.png"]

        held_host.release()
        for future in (first, second):
            resp = future.result(timeout=120)
            assert resp.status_code == 200, resp.text
            assert resp.json()["results"][0]["result"][0]["type"] == "brushlabels"
        # Capacity is back: the refused request succeeds when retried.
        again = client.post("/predict", json=upload(2))
        assert again.status_code == 200, again.text
        assert health(client)["inflight"] == 0


def test_timeout_answers_504_and_abandoned_work_keeps_its_slot(
    lite: LiteMedSAMPredictor, held_host: ImageHost
) -> None:
    # 3 s, not 1 s: the timeout also bounds reading the body (408), and on a loaded CI
    # machine eight concurrent uploads can take longer than a second to arrive
    settings = {"max_inflight": 1, "max_queue": 2, "request_timeout_s": 3.0}
    with serve(lite, label_studio_url=held_host.url, **settings) as (client, engine):
        threads_before = predict_threads()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client.post, "/predict", json=upload(i)) for i in range(8)]
            responses = [f.result(timeout=60) for f in futures]
        codes = sorted(r.status_code for r in responses)
        # 3 admitted (1 fetching from the held host, 2 waiting) time out; 5 are refused.
        assert codes == [503] * 5 + [504] * 3, codes
        for resp in responses:
            assert resp.json()["error"]
            if resp.status_code == 504:
                assert "did not finish within 3 s" in resp.json()["error"]
        # The waiting jobs were cancelled; the running one is abandoned but still counted,
        # so a new request is refused instead of starting more threads.
        assert health(client)["queued"] == 0
        assert health(client)["inflight"] == 1
        resp = client.post("/predict", json=upload(9))
        assert resp.status_code in (503, 504), resp.text
        assert predict_threads() - threads_before <= 1
        assert engine.queue.timed_out >= 3
        held_host.release()
        wait_for(lambda: health(client)["inflight"] == 0, "the abandoned fetch to end")
        resp = client.post("/predict", json=upload(9))
        assert resp.status_code == 200, resp.text


def test_burst_of_cold_requests_on_the_real_model(
    fresh_lite: Callable[..., LiteMedSAMPredictor], shared_data: Path, cold_images: list[Cold]
) -> None:
    """8 concurrent cold images against 1 running + 1 queued: the rest get 503, none fail."""
    predictor = fresh_lite()  # own cache: every image is cold
    burst = cold_images[:8]
    settings = {"max_inflight": 1, "max_queue": 1, "local_files_root": shared_data}
    with serve(predictor, **settings) as (client, engine):
        barrier = threading.Barrier(len(burst))

        def send(item: Cold) -> httpx.Response:
            request = item.body()
            barrier.wait()
            return client.post("/predict", json=request)

        with ThreadPoolExecutor(len(burst)) as pool:
            responses = list(pool.map(send, burst))
        codes = [r.status_code for r in responses]
        print(f"\nburst of {len(burst)} cold requests, queue 1+1: status codes {codes}")
        assert set(codes) <= {200, 503}, codes
        assert codes.count(503) >= len(burst) - 3, codes  # 2 fit; 1 more if the first ends
        assert codes.count(200) >= 1, codes
        assert engine.queue.refused == codes.count(503)
        retry_after = [int(r.headers["retry-after"]) for r in responses if r.status_code == 503]
        assert all(1 <= s <= 120 for s in retry_after), retry_after
        # Every request eventually succeeds: the refused ones retried one after another,
        # and each answer is the real mask for its own image (not a neighbour's).
        for item, resp in zip(burst, responses, strict=True):
            if resp.status_code == 503:
                resp = client.post("/predict", json=item.body())
            assert resp.status_code == 200, resp.text
            brush = resp.json()["results"][0]["result"][0]
            got = rle_to_mask(brush["value"]["rle"], *item.image.shape[:2])
            predictor.set_image(item.image)
            expected, _ = predictor.predict_box(item.box)
            np.testing.assert_array_equal(got, expected)


def test_timeout_on_the_real_model_finishes_in_the_background(
    fresh_lite: Callable[..., LiteMedSAMPredictor], shared_data: Path, cold_images: list[Cold]
) -> None:
    """A cold encoder pass cannot finish in 20 ms: 504, then the embedding lands anyway."""
    predictor = fresh_lite()
    settings = {"request_timeout_s": 0.02, "local_files_root": shared_data}
    with serve(predictor, **settings) as (client, _):
        resp = client.post("/predict", json=cold_images[8].body())
        assert resp.status_code == 504, resp.text
        assert "did not finish within 0.02 s" in resp.json()["error"]
        wait_for(lambda: health(client)["inflight"] == 0, "the background prediction to end")
        assert predictor.cache.stats.misses == 1 and len(predictor.cache) == 1


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_inflight": 0}, "max_inflight"),
        ({"max_queue": -1}, "max_queue"),
        ({"request_timeout_s": 0.0}, "request_timeout_s"),
        ({"request_timeout_s": float("nan")}, "request_timeout_s"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_limits_are_refused(settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        BackendConfig(**settings).validate()


def test_a_slow_body_gets_408(lite: LiteMedSAMPredictor) -> None:
    """A client that stops sending its body is cut off after request_timeout_s."""
    with serve(lite, request_timeout_s=1.0) as (client, _):
        credentials = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode())
        port = client.base_url.port
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + credentials
                + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ta"
            )  # fmt: skip
            answer = sock.recv(65536)  # the server speaks first: we never finish the body
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(rest) < length and (chunk := sock.recv(65536)):
                rest += chunk
            answer = head + b"\r\n\r\n" + rest
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"not received within 1 s" in answer
        assert health(client)["status"] == "UP"


def test_the_import_warm_queue_is_bounded(
    lite: LiteMedSAMPredictor, held_host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook naming thousands of tasks cannot queue unbounded background work."""
    monkeypatch.setattr("ml_backend.engine.MAX_WARM_PENDING", 3)
    with serve(lite, label_studio_url=held_host.url, warm_on_import=True) as (client, engine):
        tasks = [{"id": i, "data": {"image": f"/data/upload/{i}/slice.png"}} for i in range(10)]
        hook = {"action": "TASKS_CREATED", "tasks": tasks, "project": {"label_config": XML}}
        first = client.post("/webhook", json=hook)
        assert first.status_code == 200 and first.json()["queued"] == 3
        assert held_host.arrived.acquire(timeout=60)
        assert client.post("/webhook", json=hook).json()["queued"] == 0  # still full
        held_host.release()
        wait_for(lambda: engine.warm_pending == 0, "the warm queue to drain")
        assert client.post("/webhook", json=hook).json()["queued"] == 3
