"""The one device resolver: "auto" | "cpu" | "cuda[:N]" → a device string, ValueError else."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ml_backend.device import check_device_name, resolve_device


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "CPU", "cuda:", "cuda:-1", "cuda:x", "cuda1", "", " cpu"])
def test_unknown_names_are_value_errors(name: str) -> None:
    with pytest.raises(ValueError, match="unsupported device") as info:
        resolve_device(name)
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(info.value)  # says what to use
    with pytest.raises(ValueError, match="unsupported device"):
        check_device_name(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=f"device '{name}' requested but CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_gpus() -> None:
    count = torch.cuda.device_count()
    assert resolve_device("cuda") == "cuda"
    assert resolve_device(f"cuda:{count - 1}") == f"cuda:{count - 1}"
    with pytest.raises(ValueError, match=f"only {count} GPU"):
        resolve_device(f"cuda:{count}")


def test_checking_a_name_does_not_import_torch() -> None:
    """The gunicorn master validates its config with it and must never import torch."""
    code = (
        "import sys; from ml_backend.device import check_device_name, resolve_device; "
        "check_device_name('cuda:3'); resolve_device('cpu'); "
        "from ml_backend.config import BackendConfig; BackendConfig(device='cuda'); "
        "import ml_backend.serve, ml_backend.workers; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
