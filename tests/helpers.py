"""The one support module of the tests (and benchmarks): real-data loaders, boxes, LS contexts,
handles of the session's Label Studio and backend, starting a Label Studio and serving the real
backend, a threaded uvicorn server, tiny synthetic data sets, a volunteer's steps in a real
browser. Tests import from here or take fixtures from ``conftest.py``; no test module imports
another test module."""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MEDCROWD_SHARED_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class OrganMask:
    image_path: Path
    mask_path: Path
    structure: str

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(Image.open(self.image_path).convert("RGB"))
        mask = np.asarray(Image.open(self.mask_path)) > 0
        return image, mask


def sammed2d_masks(root: Path) -> list[OrganMask]:
    """All 30 SAM-Med2D demo masks with their image (README: <stem>_<structure>_<i>.png)."""
    demo = root / "sammed2d_demo"
    stems = sorted(p.stem for p in (demo / "images").glob("*.png"))
    out = []
    for mask_path in sorted((demo / "masks").glob("*.png")):
        stem = next(s for s in stems if mask_path.stem.startswith(s + "_"))
        structure = mask_path.stem[len(stem) + 1 :]
        out.append(OrganMask(demo / "images" / f"{stem}.png", mask_path, structure))
    return out


def tight_box(mask: np.ndarray) -> list[float]:
    """XYXY pixel box around a mask: x1/y1 are one past the last foreground column/row."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * inter / total)


def box_context(box: list[float], width: int, height: int, label: str = "Organ") -> dict:
    x0, y0, x1, y1 = box
    return {
        "result": [
            {
                "original_width": width,
                "original_height": height,
                "image_rotation": 0,
                "from_name": "box",
                "to_name": "image",
                "type": "rectanglelabels",
                "value": {
                    "x": 100.0 * x0 / width,
                    "y": 100.0 * y0 / height,
                    "width": 100.0 * (x1 - x0) / width,
                    "height": 100.0 * (y1 - y0) / height,
                    "rotation": 0,
                    "rectanglelabels": [label],
                },
            }
        ]
    }


# -- handles of the session fixtures (tests/conftest.py) -----------------------------------
@dataclass(frozen=True)
class StudioHandle:
    url: str
    token: str
    email: str
    password: str


@dataclass
class BackendHandle:
    url: str
    auth: tuple[str, str]
    app: Any


class ThreadedServer:
    """An ASGI app under uvicorn on a loopback port, in a daemon thread (a context manager)."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("backend did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` set, restored on exit (a child started inside inherits
    them)."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def label_studio_process(
    data_dir: Path, *, roles: bool = False, env: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """A real Label Studio (``medcrowd.embedded.LabelStudioProcess``, as ``medcrowd up``
    starts it) on a free loopback port, with a fresh admin (``admin@example.com``, random
    password and API token), started in ``data_dir`` and stopped on exit.

    Args:
        data_dir: where Label Studio writes everything.
        roles: with medcrowd's roles plugin.
        env: variables added to the child's environment (e.g. ``MEDCROWD_ONBOARDING_GOLD``).

    Yields:
        the started ``LabelStudioProcess`` (``url``, ``token``, ``email``, ``password``).
    """
    from medcrowd.embedded import LabelStudioProcess, free_port

    proc = LabelStudioProcess(
        data_dir=data_dir,
        email="admin@example.com",
        password=secrets.token_urlsafe(12),
        token=secrets.token_hex(20),
        port=free_port(),
        roles=roles,
    )
    try:
        with environment(env or {}):  # the child's environment comes from ours
            proc.start()
        yield proc
    finally:
        proc.stop()


@contextmanager
def serve_backend(
    label_studio_url: str, label_studio_token: str, predictor: Any, **settings: Any
) -> Iterator[BackendHandle]:
    """The real backend app (``ml_backend.server.create_app``) for ``predictor`` under
    uvicorn on a free loopback port, with HTTP Basic auth (user ``labelstudio``, a random
    password) and images fetched from ``label_studio_url`` with ``label_studio_token``.

    Args:
        settings: further :class:`ml_backend.config.BackendConfig` fields.
    """
    from medcrowd.embedded import free_port
    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(16))
    config = BackendConfig(
        host="127.0.0.1",
        port=port,
        basic_auth=auth,
        label_studio_url=label_studio_url,
        label_studio_token=label_studio_token,
        **settings,
    )
    app = create_app(config, predictor=predictor)
    with ThreadedServer(app, port):
        yield BackendHandle(f"http://127.0.0.1:{port}", auth, app)


# -- tiny synthetic data sets --------------------------------------------------------------
def blob_pairs(n: int, size: int, seed: int, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(n, S, S[, 3]) uint8 images and (n, S, S) uint8 class ids {0, 1}: bright squares."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.uint8)
    for lab in labels:
        for _ in range(2):
            y, x = rng.integers(size // 8, size - size // 4, 2)
            h, w = rng.integers(size // 8, size // 4, 2)
            lab[y : y + h, x : x + w] = 1
    images = (40 + 160 * labels + rng.integers(0, 30, labels.shape)).astype(np.uint8)
    if rgb:
        images = np.stack([images, images // 2, 255 - images], axis=-1)
    return images, labels


DiskFactory = Callable[..., tuple[np.ndarray, np.ndarray]]


def disks(
    n: int, size: int = 32, seed: int = 0, noise: float = 20.0, radius: tuple[int, int] = (4, 9)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` gray images with one bright disk each on a noisy dark background, and the masks.

    Returns (N, size, size) uint8 images and (N, size, size) uint8 {0, 1} masks.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        r = int(rng.integers(*radius))
        cy, cx = rng.integers(r, size - r, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = 50 + 140 * mask + rng.normal(0, noise, (size, size))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        masks.append(mask)
    return np.stack(images), np.stack(masks)


# -- volumes (tests/medcrowd/test_imaging.py, tests/e2e/test_import.py) --------------------
VOLUME_SPACING = (0.7, 0.8, 2.5)
VOLUME_ORIGIN = (-10.0, 20.0, 5.0)
VOLUME_DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # not the identity, on purpose


def em_volume(shared_data: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X) ISBI EM slices and their membrane labels (label == 0 is membrane)."""
    root = shared_data / "isbi2012_em" / "train"
    images = np.stack([np.asarray(Image.open(root / "image" / f"{i}.png")) for i in range(n)])
    labels = np.stack([np.asarray(Image.open(root / "label" / f"{i}.png")) == 0 for i in range(n)])
    return images.astype(np.int16) * 4 - 500, labels  # HU-like values


def write_volume(array: np.ndarray, path: Path) -> None:
    """``array`` (Z, Y, X) as a volume file with the test geometry (suffix picks the format)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(VOLUME_SPACING)
    image.SetOrigin(VOLUME_ORIGIN)
    image.SetDirection(VOLUME_DIRECTION)
    sitk.WriteImage(image, str(path))


# -- a stand-in image host for the backend (tests/ml_backend, tests/e2e/test_backend_contract) --
XML = (REPO / "configs" / "labeling_box_brush.xml").read_text()
"""The labeling config ``medcrowd up`` uses: Image + RectangleLabels prompt + BrushLabels."""


class ImageHost:
    """A real HTTP server on 127.0.0.1 standing in for an image host (a context manager).

    ``GET /data/upload/<name>`` serves ``files[name]``; ``GET /redirect?to=URL`` answers 302 to
    ``URL``; anything else 404. Every request's path and headers are recorded in ``hits``.
    After :meth:`hold`, requests wait (``arrived`` is released once per request that arrives)
    until :meth:`release` — so a test knows exactly when the backend is inside a fetch.
    """

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.files: dict[str, bytes] = dict(files or {})
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.arrived = threading.Semaphore(0)
        self._gate = threading.Event()
        self._gate.set()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                host.hits.append((self.path, dict(self.headers)))
                if not host._gate.is_set():
                    host.arrived.release()
                    host._gate.wait(timeout=120)
                parsed = urllib.parse.urlparse(self.path)
                if parsed.path == "/redirect":
                    target = urllib.parse.parse_qs(parsed.query)["to"][0]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                    return
                name = parsed.path.removeprefix("/data/upload/")
                data = host.files.get(name)
                if not parsed.path.startswith("/data/upload/") or data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """Make requests wait inside the host from now on (see ``arrived``)."""
        self._gate.clear()

    def release(self) -> None:
        """Let held and future requests through."""
        self._gate.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ImageHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a real browser (tests/e2e/test_*browser.py) -------------------------------------------
# Headless Chromium (Debian's /usr/bin/chromium, or MEDCROWD_CHROMIUM) driven by Python
# Playwright; the ``browser`` fixture (conftest.py) launches it once per module. The steps
# drive Label Studio 1.23's labelling page the way a person does: log in through the form, wait
# for the slice, drag on the image in image pixels, wait for the backend's answer to a box,
# submit. Masks are read back from Label Studio's JSON (``brushlabels`` RLE), never assumed.
# Screenshots go to $MEDCROWD_TEST_ARTIFACTS (default test-artifacts/).
CHROMIUM = Path(os.environ.get("MEDCROWD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("MEDCROWD_TEST_ARTIFACTS", "test-artifacts"))
# Flags that let Chromium run headless as root in a container without network access.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1400}


def browser_marks() -> list[Any]:
    """``pytestmark`` of a browser test module: e2e, skipped without Playwright or
    Chromium."""
    import importlib.util

    import pytest

    return [
        pytest.mark.e2e,
        pytest.mark.skipif(
            importlib.util.find_spec("playwright") is None,
            reason="Python Playwright is not installed (pip install playwright)",
        ),
        pytest.mark.skipif(
            not CHROMIUM.is_file(),
            reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set "
            "MEDCROWD_CHROMIUM)",
        ),
    ]


_IMAGE = ".lsf-main-content img[alt=image]"


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def open_page(browser: Any, timeout_ms: int, failure_png: str) -> Iterator[Any]:
    """A page in a fresh browser context (1400 × 1400); on any failure inside, a screenshot
    ``ARTIFACTS/failure_png`` is taken before the error goes on. The context is closed on
    exit."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / failure_png))
        raise
    finally:
        context.close()


def screenshot(page: Any, name: str, **kwargs: Any) -> Path:
    """``page`` as ``ARTIFACTS/name``; returns the path."""
    path = ARTIFACTS / name
    page.screenshot(path=str(path), **kwargs)
    return path


def log_in(page: Any, url: str, email: str, password: str) -> None:
    """Log in through Label Studio's login form, as a volunteer would."""
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/user/login" not in u)


def wait_for_slice(page: Any) -> None:
    """Until the labelling page's image has loaded."""
    page.wait_for_function(
        f"() => {{ const i = document.querySelector('{_IMAGE}');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )


def open_task(page: Any, url: str, task: dict[str, Any]) -> None:
    """Log in as ``task``'s volunteer (``email``, ``password``), open its ``task`` of
    ``project`` in the labelling view, wait for the slice and turn on Auto-Annotation (what
    makes a box ask the backend on stock Label Studio)."""
    log_in(page, url, task["email"], task["password"])
    page.goto(f"{url}/projects/{task['project']}/data?task={task['task']}")
    wait_for_slice(page)
    page.locator("[data-testid=bottombar-auto-annotation-toggle]").check(force=True)


def image_frame(page: Any) -> dict[str, float]:
    """Where the image lies on the page (CSS pixels: x, y, width, height).

    Taken from the (hidden) ``<img>`` Label Studio lays out under its canvas, not from the
    Konva stage: the image may be drawn larger than the stage and shifted (with this
    viewport, 811 px at -21 px inside a 769 px stage), and the stage's box would misplace a
    drag by several image pixels.
    """
    frame = page.locator(_IMAGE).first.bounding_box()
    assert frame is not None
    return dict(frame)


def to_page(page: Any, x: float, y: float, shape: tuple[int, int]) -> tuple[float, float]:
    """Image pixel (x, y) of an ``(H, W)`` image → page coordinates."""
    frame = image_frame(page)
    return (
        frame["x"] + x * frame["width"] / shape[1],
        frame["y"] + y * frame["height"] / shape[0],
    )


def drag(page: Any, points: list[tuple[float, float]], shape: tuple[int, int]) -> None:
    """Press, move through ``points`` (image pixels x, y of an ``(H, W)`` image), release."""
    (x0, y0), *rest = [to_page(page, x, y, shape) for x, y in points]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(x, y, steps=15)
    page.mouse.up()


def is_prediction(response: Any) -> bool:
    """Label Studio's interactive call to the backend (the browser's side of it)."""
    return "/interactive-annotating" in response.url and response.request.method == "POST"


def box_for_mask(page: Any, box: list[float], shape: tuple[int, int]) -> dict[str, Any]:
    """Drag ``box`` (XYXY image pixels) with the box tool picked and return Label Studio's
    answer to the interactive call it makes (asserted 200 without ``errors``)."""
    x0, y0, x1, y1 = box
    with page.expect_response(is_prediction) as predicted:
        drag(page, [(x0, y0), (x1, y1)], shape)
    assert predicted.value.status == 200, predicted.value.text()
    answer: dict[str, Any] = predicted.value.json()
    assert "errors" not in answer, answer
    return answer


def submit(page: Any, task_id: int) -> dict[str, Any]:
    """Click Submit; returns the created annotation (Label Studio answered 201)."""
    with page.expect_response(
        lambda r: f"/api/tasks/{task_id}/annotations" in r.url and r.request.method == "POST"
    ) as saved:
        page.locator("[data-testid=bottombar-submit-button]").click()
    assert saved.value.status == 201, saved.value.text()
    created: dict[str, Any] = saved.value.json()
    return created


def label_rows(label_config: str) -> list[str]:
    """The labelling page's rows of inline labels, in config order (one per *Labels tag)."""
    return re.findall(r"<(\w+Labels)\b", label_config)


def pick_label(page: Any, rows: list[str], control: str, label: str) -> None:
    """Click ``label`` in the row of the ``control`` tag (e.g. ``RectangleLabels``)."""
    page.locator(".lsf-labels").nth(rows.index(control)).locator(
        ".lsf-label", has_text=label
    ).click()


def brush_union(result: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the union of every ``brushlabels`` region of a Label Studio result."""
    from ml_backend.rle import rle_to_mask

    mask = np.zeros(shape, bool)
    for r in result:
        if r.get("type") == "brushlabels":
            mask |= rle_to_mask(r["value"]["rle"], *shape)
    return mask


def one_slice_project(
    studio: Any, backend: Any, shared_data: Path, stem: str, mask: str, title: str
) -> dict[str, Any]:
    """A project with medcrowd's labelling config and one SAM-Med2D slice, the backend
    connected, and a volunteer who can log in.

    Args:
        studio: the admin's ``medcrowd.studio.Studio``.
        backend: a ``tests.helpers.BackendHandle``.
        stem, mask: the slice's image and expert-mask file stems in ``sammed2d_demo``.
        title: the project title's prefix (a random suffix is added).

    Returns:
        ``project``, ``task`` (ids), ``label_config``, ``email``, ``password``, ``user_id``
        (the volunteer), ``gt`` ((H, W) bool expert mask).
    """
    from medcrowd.settings import config_path

    config = config_path("labeling_box_brush.xml").read_text()
    project_id = studio.ensure_project(f"{title} {uuid.uuid4().hex[:8]}", config)
    image = shared_data / "sammed2d_demo" / "images" / f"{stem}.png"
    assert studio.import_images(project_id, [(image.name, image.read_bytes())]).created == 1
    studio.connect_backend(project_id, backend.url, backend.auth)
    (task,) = list(studio.client.tasks.list(project=project_id))
    email = f"volunteer-{uuid.uuid4().hex[:8]}@example.com"
    password = secrets.token_urlsafe(12)
    user_id, _ = studio.create_volunteer(email, password)
    gt = np.asarray(Image.open(shared_data / "sammed2d_demo" / "masks" / f"{mask}.png")) > 0
    return {
        "project": project_id,
        "task": int(task.id),
        "label_config": config,
        "email": email,
        "password": password,
        "user_id": user_id,
        "gt": gt,
    }


# -- a throwaway PostgreSQL cluster (tests/e2e/test_postgres.py, benchmarks/_stack.py) ----------
class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries, or no way to run them (root without a postgres user)."""


def _pg_bindir() -> Path | None:
    """Directory with initdb/pg_ctl: ``MEDCROWD_PG_BINDIR``, Debian's newest
    /usr/lib/postgresql/N/bin, else PATH."""
    import shutil

    override = os.environ.get("MEDCROWD_PG_BINDIR")
    if override:
        return Path(override)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PostgresServer:
    """A running private cluster: superuser ``pgadmin`` over the Unix socket (trust), every
    TCP client on 127.0.0.1:``port`` with a password (SCRAM-SHA-256)."""

    port: int
    socket_dir: Path
    admin: str = "pgadmin"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=self.admin, dbname=dbname,
            autocommit=True,
        )  # fmt: skip

    def create_database(self, user: str, password: str, name: str) -> str:
        """A login role owning a new database; returns its percent-encoded TCP URL."""
        from urllib.parse import quote

        from psycopg import sql

        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(user)
                )
            )
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(name, safe='')}"
        )


@contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster in a temporary directory, removed afterwards.

    Debian's ``postgresql`` package (or any ``initdb``/``pg_ctl`` on PATH), listening on a free
    loopback port. PostgreSQL refuses to run as root, so under root the server runs as the
    ``postgres`` system user. Durability is off (``fsync``, ``synchronous_commit``,
    ``full_page_writes``): a throwaway cluster, and Label Studio's migrations run fast.

    Raises:
        PostgresMissing: no server binaries, or root without a ``postgres`` user.
    """
    import shutil
    import subprocess
    import tempfile

    from medcrowd.embedded import free_port

    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        raise PostgresMissing("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="medcrowd-pg-"))  # short: socket paths max ~100 chars
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            raise PostgresMissing(
                "running as root and there is no 'postgres' system user to run the server"
            ) from None
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        os.chown(root, account.pw_uid, account.pw_gid)
    data, log = root / "data", root / "server.log"
    port = free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def pg(*args: str) -> None:
        subprocess.run(
            [str(bindir / args[0]), *args[1:]], cwd=root, env=env, check=True,
            capture_output=True, timeout=120, **run_as,
        )  # fmt: skip

    started = False
    try:
        pg("initdb", "-D", str(data), "-U", "pgadmin", "--auth-local=trust",
           "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        started = True
        yield PostgresServer(port=port, socket_dir=root)
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{exc.cmd[0]} failed: {exc.stderr!r}\n{tail}") from exc
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
