"""Image URL resolution and decoding: allowed roots, host pinning, corrupt and huge images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml_backend.errors import InvalidInput
from ml_backend.images import ImageFetcher, decode_image


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def roots(tmp_path: Path) -> tuple[Path, Path]:
    served = tmp_path / "served"
    (served / "project").mkdir(parents=True)
    (served / "project" / "a.png").write_bytes(png(np.full((6, 9), 7, np.uint8)))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png(np.zeros((4, 4), np.uint8)))
    return served, secret


def test_local_file_inside_root_is_read(roots: tuple[Path, Path]) -> None:
    served, _ = roots
    fetcher = ImageFetcher(label_studio_url="http://127.0.0.1:8080", local_files_root=served)
    image = fetcher.fetch("/data/local-files/?d=project/a.png")
    assert image.shape == (6, 9) and image.dtype == np.uint8 and int(image[0, 0]) == 7


@pytest.mark.parametrize(
    "rel", ["../secret.png", "project/../../secret.png", "/etc/passwd", "project/%2e%2e/../x"]
)
def test_local_file_outside_root_is_refused(roots: tuple[Path, Path], rel: str) -> None:
    served, _ = roots
    fetcher = ImageFetcher(label_studio_url="http://127.0.0.1:8080", local_files_root=served)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        fetcher.fetch(f"/data/local-files/?d={rel}")


def test_symlink_escaping_the_root_is_refused(roots: tuple[Path, Path]) -> None:
    served, secret = roots
    (served / "project" / "link.png").symlink_to(secret)
    fetcher = ImageFetcher(label_studio_url="http://127.0.0.1:8080", local_files_root=served)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        fetcher.fetch("/data/local-files/?d=project/link.png")


def test_narrower_allowed_root(roots: tuple[Path, Path], tmp_path: Path) -> None:
    served, _ = roots
    (served / "other").mkdir()
    (served / "other" / "b.png").write_bytes(png(np.zeros((3, 3), np.uint8)))
    fetcher = ImageFetcher(
        label_studio_url=None, local_files_root=served, allowed_roots=[served / "project"]
    )
    assert fetcher.fetch("/data/local-files/?d=project/a.png").shape == (6, 9)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        fetcher.fetch("/data/local-files/?d=other/b.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/data/upload/1/a.png",  # same host, other port
        "https://127.0.0.1:8080/data/upload/1/a.png",  # other scheme
        "http://169.254.169.254/latest/meta-data",
        "http://user@evil.example/data/upload/1/a.png",
    ],
)
def test_other_hosts_refused_without_a_request(url: str) -> None:
    fetcher = ImageFetcher(label_studio_url="http://127.0.0.1:8080")
    with pytest.raises(InvalidInput, match="not the configured Label Studio host"):
        fetcher.fetch(url)


@pytest.mark.parametrize("url", ["", "   ", "data:image/png;base64,AAAA", "ftp://x/y.png"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(InvalidInput):
        ImageFetcher(label_studio_url="http://127.0.0.1:8080").fetch(url)


def test_decode_keeps_16_bit_and_rgb() -> None:
    sixteen = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(sixteen).save(buf, format="PNG")
    out = decode_image(buf.getvalue(), max_pixels=100)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, sixteen)
    rgb = decode_image(png(np.zeros((2, 3, 3), np.uint8)), max_pixels=100)
    assert rgb.shape == (2, 3, 3)


def test_decode_rejects_corrupt_empty_and_huge() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", max_pixels=10)
    with pytest.raises(InvalidInput, match="could not be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\ngarbage", max_pixels=10)
    with pytest.raises(InvalidInput, match="more than the limit"):
        decode_image(png(np.zeros((20, 20), np.uint8)), max_pixels=399)


def test_decoded_images_are_cached_until_the_file_changes(roots: tuple[Path, Path]) -> None:
    served, _ = roots
    fetcher = ImageFetcher(label_studio_url=None, local_files_root=served)
    first = fetcher.fetch("/data/local-files/?d=project/a.png")
    assert fetcher.fetch("/data/local-files/?d=project/a.png") is first
    assert not first.flags.writeable
    path = served / "project" / "a.png"
    path.write_bytes(png(np.full((6, 9), 99, np.uint8)))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = fetcher.fetch("/data/local-files/?d=project/a.png")
    assert again is not first and int(again[0, 0]) == 99


def test_cache_is_bounded(roots: tuple[Path, Path]) -> None:
    served, _ = roots
    for i in range(5):
        (served / "project" / f"{i}.png").write_bytes(png(np.full((3, 3), i, np.uint8)))
    fetcher = ImageFetcher(label_studio_url=None, local_files_root=served, cached_images=2)
    arrays = [fetcher.fetch(f"/data/local-files/?d=project/{i}.png") for i in range(5)]
    assert len(fetcher._decoded) == 2
    assert fetcher.fetch("/data/local-files/?d=project/4.png") is arrays[4]
    assert fetcher.fetch("/data/local-files/?d=project/0.png") is not arrays[0]


def test_cache_is_bounded_in_bytes_and_holds_a_crowd(roots: tuple[Path, Path]) -> None:
    served, _ = roots
    for i in range(40):
        (served / "project" / f"{i}.png").write_bytes(png(np.full((10, 10, 3), i, np.uint8)))
    crowd = ImageFetcher(label_studio_url=None, local_files_root=served)
    arrays = [crowd.fetch(f"/data/local-files/?d=project/{i}.png") for i in range(40)]
    # the default holds 30 volunteers' images at once: the first is still the same object
    assert crowd.fetch("/data/local-files/?d=project/0.png") is arrays[0]
    small = ImageFetcher(label_studio_url=None, local_files_root=served, cached_bytes=3 * 300)
    for i in range(5):
        small.fetch(f"/data/local-files/?d=project/{i}.png")  # 300 bytes each
    assert len(small._decoded) == 3 and small._decoded_bytes == 900
    assert small.fetch("/data/local-files/?d=project/0.png") is not arrays[0]
