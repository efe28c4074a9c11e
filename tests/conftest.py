"""Shared fixtures: real data, a real Label Studio, the real backend over HTTP.

Label Studio is started once per test session (first start runs migrations, ~1 min on two
cores) in a temporary directory, through the same ``LabelStudioProcess`` that ``medcrowd up``
uses (``tests.helpers.label_studio_process``). The ML backend runs in this process under
uvicorn on a free loopback port with HTTP Basic auth, serving the real LiteMedSAM predictor
(``tests.helpers.serve_backend``). Browser tests share a headless Chromium per module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    BackendHandle,
    StudioHandle,
    label_studio_process,
    launch_chromium,
    one_slice_project,
    serve_backend,
    shared_data_dir,
)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI a missing shared data folder fails the run at once instead of skipping the
    accuracy tests one by one (a green CI that tested nothing real would be a lie)."""
    root = shared_data_dir()
    if _ci() and not root.is_dir():
        pytest.exit(
            f"CI=true but the shared data folder {root} does not exist (set MEDCROWD_SHARED_DATA)",
            returncode=1,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI, a test skipped for missing shared data (a skip whose reason names
    MEDCROWD_SHARED_DATA, as every such skip here does) counts as failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if _ci() and report.skipped and "MEDCROWD_SHARED_DATA" in str(report.longrepr):
        report.outcome = "failed"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "sammed2d_demo").is_dir():
        pytest.skip(f"shared data not found at {root} (set MEDCROWD_SHARED_DATA)")
    return root


# -- Label Studio -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioHandle]:
    reuse_url = os.environ.get("MEDCROWD_TEST_LS_URL")
    if reuse_url:  # development only: point the suite at a Label Studio already running
        yield StudioHandle(reuse_url, os.environ["MEDCROWD_TEST_LS_TOKEN"], "", "")
        return
    # MEDCROWD_TEST_ROLES=1 runs the session's Label Studio with medcrowd's roles plugin,
    # as `medcrowd up` does (docs/security.md lists the tests that assume stock rights)
    roles = os.environ.get("MEDCROWD_TEST_ROLES", "") == "1"
    with label_studio_process(tmp_path_factory.mktemp("label-studio"), roles=roles) as proc:
        yield StudioHandle(proc.url, proc.token, proc.email, proc.password)


# -- the backend over HTTP ------------------------------------------------------------------
@pytest.fixture(scope="session")
def litemedsam(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real LiteMedSAM predictor, built once per session (ONNX export into a tmp dir)."""
    from ml_backend import get_predictor

    cache_dir = tmp_path_factory.mktemp("model-cache")
    return get_predictor("litemedsam", device="cpu", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def backend(label_studio: StudioHandle, litemedsam: Any) -> Iterator[BackendHandle]:
    with serve_backend(label_studio.url, label_studio.token, litemedsam) as handle:
        yield handle


# -- a real browser (tests/e2e/test_*browser.py; steps in tests/helpers.py) -----------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, ``MEDCROWD_CHROMIUM``) driven by Python Playwright, one
    per test module; each test opens its own context (``tests.helpers.open_page``)."""
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def liver_slice_task(
    request: pytest.FixtureRequest,
    label_studio: StudioHandle,
    backend: BackendHandle,
    shared_data: Path,
) -> dict[str, Any]:
    """A project (one per test module) with one CT slice, ``amos_0004_75``, our backend
    connected and a volunteer who can log in; ``gt`` is the expert's liver mask, ``studio``
    the admin's client (:func:`tests.helpers.one_slice_project`)."""
    from medcrowd.studio import Studio

    studio = Studio(label_studio.url, label_studio.token)
    title = "e2e " + request.module.__name__.rsplit(".", 1)[-1]
    slice_ = "amos_0004_75"
    task = one_slice_project(studio, backend, shared_data, slice_, f"{slice_}_liver_000", title)
    return {**task, "studio": studio}
