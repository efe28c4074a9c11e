"""``--threads``: one process's CPU thread pools, fixed before its model is built.

Each check runs in a fresh interpreter: PyTorch's inter-op pool can be sized only once per
process, and the setting is process-wide by design.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ml_backend.device import configure_threads

REPO = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent(
    """
    import json, sys
    import torch
    from ml_backend.device import configure_threads, thread_settings
    from ml_backend.onnx_export import OnnxRunner, export_verified

    threads, workers, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    before = thread_settings()
    configure_threads(threads, workers=workers)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    path = export_verified(net, (torch.rand(1, 8),), __import__("pathlib").Path(out),
                           input_names=["x"], output_names=["y"], tag="t")
    runner = OnnxRunner(path)
    options = runner.session.get_session_options()
    print(json.dumps({
        "default_before": [before.intra_op, before.spinning],
        "torch_intra": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
        "ort_intra": options.intra_op_num_threads,
        "ort_spin": options.get_session_config_entry("session.intra_op.allow_spinning"),
        "ort_inter_spin": options.get_session_config_entry("session.inter_op.allow_spinning"),
        "runs": float(runner(__import__("numpy").ones((1, 8), "float32"))[0].sum()) >= 0,
    }))
    """
)


def _probe(tmp_path: Path, threads: int, workers: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(threads), str(workers), str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_threads_reach_torch_and_onnx_runtime_without_spinning(tmp_path: Path) -> None:
    got = _probe(tmp_path, threads=1, workers=1)
    assert got["default_before"] == [os.cpu_count() or 1, False]
    assert (got["torch_intra"], got["torch_interop"], got["ort_intra"]) == (1, 1, 1)
    assert (got["ort_spin"], got["ort_inter_spin"]) == ("0", "0")
    assert got["runs"] is True


def test_zero_threads_share_the_cores_between_workers(tmp_path: Path) -> None:
    cpus = os.cpu_count() or 1
    got = _probe(tmp_path, threads=0, workers=cpus * 2)  # more workers than cores: 1 each
    assert (got["torch_intra"], got["ort_intra"]) == (1, 1)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="threads must be >= 0"):
        configure_threads(-1)
    with pytest.raises(ValueError, match="workers >= 1"):
        configure_threads(1, workers=0)
