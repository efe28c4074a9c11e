"""``medcrowd up``: the whole embedded platform on one machine, in one command.

Steps: credentials (created once, 0600) → Label Studio on SQLite (or on PostgreSQL with
``--database``) → its URL and API token recorded in ``instance.json`` (0600, beside the
credentials: the other commands find the instance there, see :mod:`medcrowd.connection`) →
ML backend → project from ``configs/labeling_box_brush.xml`` (with the volunteer
instructions, unless staff wrote their own) → sample images (pydicom's bundled CT/MR, or
``--images``) → backend connected for interactive pre-annotation → print URL, login and
(with roles) the volunteers' signup link → wait for Ctrl-C, then stop both. Re-running reuses
the project and never duplicates tasks.

Roles are on by default: Label Studio runs with medcrowd's plugin (:mod:`medcrowd.lsplugin`,
docs/security.md), so a volunteer who signs up through the link can label and nothing else.
``roles=False`` (``medcrowd up --no-roles``) runs stock Label Studio, where every member of
the organisation can do everything.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from medcrowd.embedded import BackendProcess, LabelStudioProcess, PostgresDatabase
from medcrowd.roles import VOLUNTEER_INSTRUCTIONS, signup_link
from medcrowd.settings import Instance, config_path, load_or_create_credentials, write_instance
from medcrowd.studio import ImportReport, Studio

__all__ = ["UpOptions", "iter_image_files", "run_up"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}


@dataclass
class UpOptions:
    """What ``medcrowd up`` starts; ``database`` None means SQLite inside ``data_dir``."""

    data_dir: Path
    port: int = 8080
    backend_port: int = 9090
    project: str = "medcrowd demo"
    images: Path | None = None
    predictor: str = "litemedsam"
    device: str = "auto"
    wait: bool = True
    database: PostgresDatabase | None = None
    roles: bool = True


def iter_image_files(folder: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of the PNG/JPEG/TIFF files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no PNG/JPEG/TIFF images in {folder}")
    return [(p.name, p.read_bytes()) for p in files]


def run_up(opts: UpOptions, say: Callable[[str], None] = print) -> int:
    """Start everything, set up the project, then serve until interrupted."""
    files = iter_image_files(opts.images) if opts.images else None  # fail before starting
    creds, created = load_or_create_credentials(opts.data_dir)
    studio_proc = LabelStudioProcess(
        data_dir=opts.data_dir,
        email=creds.email,
        password=creds.password,
        token=creds.token,
        port=opts.port,
        database=opts.database,
        roles=opts.roles,
    )
    backend = BackendProcess(
        port=opts.backend_port,
        label_studio_url=studio_proc.url,
        token=creds.token,
        basic_auth=(creds.backend_user, creds.backend_password),
        log_path=opts.data_dir / "logs" / "backend.log",
        cache_dir=opts.data_dir / "cache",
        predictor=opts.predictor,
        device=opts.device,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        where = f"on {opts.database.redacted()}, " if opts.database else ""
        say(f"Starting Label Studio ({where}data in {opts.data_dir}; first start takes ~1 min) …")
        studio_proc.start()
        write_instance(opts.data_dir, Instance(url=studio_proc.url, token=creds.token))
        say("Starting the ML backend (loads LiteMedSAM once) …")
        backend.start()
        studio = Studio(studio_proc.url, creds.token)
        label_config = config_path("labeling_box_brush.xml").read_text()
        project_id = studio.ensure_project(opts.project, label_config)
        studio.set_instructions(project_id, VOLUNTEER_INSTRUCTIONS, keep_existing=True)
        # Connect first: the backend's TASKS_CREATED webhook then precomputes the embedding
        # of every image imported next, so no volunteer waits for the encoder (prewarm).
        studio.connect_backend(
            project_id, backend.url, (creds.backend_user, creds.backend_password)
        )
        report: ImportReport = studio.import_images(
            project_id, files if files is not None else _samples()
        )
        say(
            f"Project {opts.project!r} (id {project_id}): {report.created} tasks imported, "
            f"{report.skipped} already there."
        )
        say(f"Open {studio_proc.url}/projects/{project_id}/data")
        if created:
            say(
                f"Login: {creds.email} / {creds.password}  (shown once; stored 0600 in "
                f"{opts.data_dir / 'credentials.json'})"
            )
        else:
            say(f"Login: {creds.email}; password in {opts.data_dir / 'credentials.json'}")
        if opts.roles:
            say(
                f"Volunteers sign up at {signup_link(studio)} (expires; `medcrowd volunteers "
                "link` prints the current one)"
            )
        else:
            say("Roles are off (--no-roles): every account can change or delete everything.")
        say("medcrowd is up. Press Ctrl-C to stop.")
        if opts.wait:
            while not stop.wait(0.5):
                if studio_proc.proc and studio_proc.proc.poll() is not None:
                    say(f"Label Studio exited; see {studio_proc.log_path}")
                    return 1
                if backend.proc and backend.proc.poll() is not None:
                    say(f"The ML backend exited; see {backend.log_path}")
                    return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("Stopping …")
        backend.stop()
        studio_proc.stop()
        signal.signal(signal.SIGTERM, previous)
        say("Stopped.")


def _samples() -> list[tuple[str, bytes]]:
    from medcrowd.samples import sample_images

    return sample_images()
