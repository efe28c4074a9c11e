"""Fetch a task's image the way the backend is allowed to, and decode it safely.

Label Studio hands tasks with image URLs that are usually relative (``/data/upload/…`` or
``/data/local-files/?d=…``). The backend resolves them in exactly two ways:

* a ``local-files`` path, when the backend shares the filesystem (``local_files_root`` set):
  read from disk, but only when the resolved path lies inside one of ``allowed_roots``;
* anything else: an HTTP GET to the configured Label Studio host, with the backend's own
  API token. Absolute URLs to any other host, other schemes (``file:``, ``s3:``, ``data:``)
  and redirects (to any host: none is followed) are refused, so a crafted task cannot make
  the backend read files or reach other machines (SSRF). The request is rebuilt from the
  configured base URL plus the task URL's path and query, never sent as the client wrote
  it, so URL-parser differences (userinfo, backslashes, odd IP spellings) cannot steer it
  elsewhere; URLs carrying credentials are refused outright.
"""

from __future__ import annotations

import io
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from ml_backend.errors import InvalidInput, UpstreamError

__all__ = ["ImageFetcher", "decode_image", "label_studio_auth_header"]


def decode_image(data: bytes, max_pixels: int) -> npt.NDArray[np.generic]:
    """Decode PNG/JPEG/TIFF bytes into an array, refusing decompression bombs.

    Returns:
        (H, W) for grayscale (uint8 or uint16 kept as is) or (H, W, 3) uint8 RGB.

    Raises:
        InvalidInput: empty, corrupt or unsupported data, or more than ``max_pixels`` pixels.
    """
    if not data:
        raise InvalidInput("image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InvalidInput(
                    f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}"
                )
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.int32)
                if arr.min() >= 0 and arr.max() <= 65535:
                    return arr.astype(np.uint16)
                return arr
            if im.mode == "L":
                return np.asarray(im, dtype=np.uint8)
            if im.mode == "F":
                return np.asarray(im, dtype=np.float32)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except InvalidInput:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"image refused as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"image could not be decoded: {exc}") from exc
    except Exception as exc:  # Pillow's plugins raise many types on hostile files
        raise InvalidInput(f"image could not be decoded ({type(exc).__name__}: {exc})") from exc


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2


@dataclass
class _TokenState:
    access: str | None = None
    expires: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def label_studio_auth_header(
    client: httpx.Client, base_url: str, token: str, state: _TokenState | None = None
) -> dict[str, str]:
    """The Authorization header for Label Studio's API.

    A legacy token is sent as ``Token <t>``; a personal access token (a JWT refresh token)
    is exchanged at ``/api/token/refresh`` for a short-lived access token sent as Bearer.
    """
    if not _is_jwt(token):
        return {"Authorization": f"Token {token}"}
    state = state or _TokenState()
    with state.lock:
        if state.access is None or time.monotonic() > state.expires:
            resp = client.post(f"{base_url}/api/token/refresh", json={"refresh": token})
            if resp.status_code != 200:
                raise PermissionError(
                    f"Label Studio refused the backend's token ({resp.status_code}); "
                    "check --label-studio-token"
                )
            state.access = resp.json()["access"]
            state.expires = time.monotonic() + 240.0  # access tokens live 5 minutes
        return {"Authorization": f"Bearer {state.access}"}


@dataclass
class ImageFetcher:
    """Resolves task image URLs under the rules in the module docstring.

    Args:
        label_studio_url: base URL of the one Label Studio host images may come from.
        token: API token for that host (legacy or personal access token); may be None when
            every image is a local file.
        local_files_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT`` when the backend
            shares the filesystem, else None.
        allowed_roots: directories local files must resolve inside (defaults to
            ``[local_files_root]``).
        max_bytes: largest image download/file accepted.
        max_pixels: largest decoded image accepted.
        timeout_s: HTTP timeout for one image.
        cached_images: how many decoded images to keep, so a volunteer's next box on the
            same task skips the download and decode. Only immutable sources are cached:
            Label Studio uploads (their names are unique) and local files keyed by path,
            size and modification time. 30 volunteers each on their own task need at least
            30 (with 8, the load benchmark's warm boxes fetched and decoded their image
            again nearly every time).
        cached_bytes: bound on the decoded images' total size (a 512×512 RGB slice is
            0.75 MiB); whichever bound is reached first evicts the least recently used.
    """

    label_studio_url: str | None
    token: str | None = None
    local_files_root: Path | None = None
    allowed_roots: list[Path] = field(default_factory=list)
    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 8192 * 8192
    timeout_s: float = 30.0
    cached_images: int = 256
    cached_bytes: int = 192 * 1024 * 1024
    _token_state: _TokenState = field(default_factory=_TokenState, repr=False)
    _decoded: OrderedDict[tuple[Any, ...], npt.NDArray[np.generic]] = field(
        default_factory=OrderedDict, repr=False
    )
    _decoded_bytes: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.label_studio_url:
            self.label_studio_url = self.label_studio_url.rstrip("/")
        roots = self.allowed_roots or ([self.local_files_root] if self.local_files_root else [])
        self.allowed_roots = [Path(r).resolve() for r in roots]

    # -- public -----------------------------------------------------------------------
    def fetch(self, url: str) -> npt.NDArray[np.generic]:
        """Return the decoded image for a task URL (see ``decode_image`` for the layout).

        The array is read-only: it may be shared with later requests through the cache.
        The URL is checked before the cache is consulted, so a cached image is never handed
        out for a URL that would be refused.
        """
        source = self._resolve(url)
        key = self._cache_key(source)
        if key is not None:
            with self._lock:
                if key in self._decoded:
                    self._decoded.move_to_end(key)
                    return self._decoded[key]
        image = decode_image(self._read(source), self.max_pixels)
        image.flags.writeable = False
        if key is not None and self.cached_images > 0 and image.nbytes <= self.cached_bytes:
            with self._lock:
                if key not in self._decoded:
                    self._decoded_bytes += image.nbytes
                    self._decoded[key] = image
                while (
                    len(self._decoded) > self.cached_images
                    or self._decoded_bytes > self.cached_bytes
                ):
                    self._decoded_bytes -= self._decoded.popitem(last=False)[1].nbytes
        return image

    def fetch_bytes(self, url: str) -> bytes:
        """The raw bytes behind a task URL, under the rules in the module docstring."""
        return self._read(self._resolve(url))

    def _resolve(self, url: object) -> _Source:
        """Check a task URL and say what to read: a local file or a Label Studio URL."""
        if not isinstance(url, str) or not url.strip():
            raise InvalidInput("task has no image URL")
        url = url.strip()
        parsed = _parse(url)
        if parsed.scheme in ("", "http", "https") and parsed.path.startswith("/data/local-files"):
            local = self._local_path(parsed)
            if local is not None:
                return _Source(local=local)
        upload = parsed.path.startswith("/data/upload/")
        if parsed.scheme in ("http", "https"):
            if not self._same_host(parsed):
                raise InvalidInput(
                    f"image URL host {parsed.netloc[:80]!r} is not the configured Label Studio "
                    "host; the backend only fetches from there"
                )
            if "@" in parsed.netloc:
                raise InvalidInput("image URLs with credentials (user@host) are not accepted")
            return _Source(url=self._on_label_studio(parsed), upload=upload)
        if parsed.scheme == "" and parsed.netloc == "" and url.startswith("/"):
            if not self.label_studio_url:
                raise InvalidInput("relative image URL but no Label Studio URL configured")
            target = self.label_studio_url + self._path_and_query(parsed)
            return _Source(url=target, upload=upload)
        raise InvalidInput(
            f"unsupported image URL {url[:80]!r}: expected a Label Studio /data/ URL"
        )

    def _read(self, source: _Source) -> bytes:
        if source.local is not None:
            return self._read_local(source.local)
        return self._http_get(source.url)

    @staticmethod
    def _cache_key(source: _Source) -> tuple[Any, ...] | None:
        """Only immutable sources: uploads (unique names), local files by size and mtime."""
        if source.local is not None:
            try:
                stat = source.local.stat()
            except OSError:
                return None  # _read_local raises the proper error
            return ("file", str(source.local), stat.st_size, stat.st_mtime_ns)
        if source.upload:
            return ("upload", source.url)
        return None

    # -- helpers ----------------------------------------------------------------------
    def _same_host(self, parsed: urllib.parse.ParseResult) -> bool:
        if not self.label_studio_url:
            return False
        base = urllib.parse.urlparse(self.label_studio_url)
        try:
            port = parsed.port or _default_port(parsed.scheme)
        except ValueError as exc:  # "host:99999", "host:abc"
            raise InvalidInput(f"image URL has an invalid port: {exc}") from exc
        return (parsed.scheme, parsed.hostname, port) == (
            base.scheme,
            base.hostname,
            base.port or _default_port(base.scheme),
        )

    @staticmethod
    def _path_and_query(parsed: urllib.parse.ParseResult) -> str:
        """``/path?query`` of a task URL, refusing backslashes, control bytes and ``..``."""
        if any(ch in parsed.path or ch in parsed.query for ch in "\\\r\n\t\x00"):
            raise InvalidInput("image URL contains control characters or backslashes")
        decoded = parsed.path
        for _ in range(3):  # %2e%2e, %252e%252e: whatever a later hop may decode
            decoded = urllib.parse.unquote(decoded)
        if any(segment in (".", "..") for segment in decoded.replace("\\", "/").split("/")):
            raise InvalidInput("image URL path must not contain '.' or '..' segments")
        path = parsed.path if parsed.path.startswith("/") else "/" + parsed.path
        return path + (f"?{parsed.query}" if parsed.query else "")

    def _on_label_studio(self, parsed: urllib.parse.ParseResult) -> str:
        """The URL to fetch: the configured origin + the task URL's path and query."""
        base = urllib.parse.urlparse(self.label_studio_url or "")
        return f"{base.scheme}://{base.netloc}{self._path_and_query(parsed)}"

    def _local_path(self, parsed: urllib.parse.ParseResult) -> Path | None:
        if self.local_files_root is None:
            return None
        query = urllib.parse.parse_qs(parsed.query)
        rel = (query.get("d") or [""])[0]
        if not rel:
            raise InvalidInput("local-files URL has no ?d= path")
        try:
            candidate = (Path(self.local_files_root) / rel).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # NUL byte, symlink loop, too long
            raise InvalidInput(f"local file path {rel[:80]!r} is not usable: {exc}") from exc
        if not any(candidate.is_relative_to(root) for root in self.allowed_roots):
            raise InvalidInput(f"local file {rel!r} lies outside the allowed roots")
        return candidate

    def _read_local(self, path: Path) -> bytes:
        try:
            if not path.is_file():
                raise InvalidInput(f"local file not found: {path.name[:80]}")
            if path.stat().st_size > self.max_bytes:
                raise InvalidInput(f"image file is larger than {self.max_bytes} bytes")
            with path.open("rb") as handle:
                data = handle.read(self.max_bytes + 1)  # the file may grow after the stat
        except OSError as exc:
            raise InvalidInput(f"local file could not be read: {path.name[:80]}") from exc
        if len(data) > self.max_bytes:
            raise InvalidInput(f"image file is larger than {self.max_bytes} bytes")
        return data

    def _http_get(self, url: str) -> bytes:
        with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
            headers = {}
            if self.token and self.label_studio_url:
                headers = label_studio_auth_header(
                    client, self.label_studio_url, self.token, self._token_state
                )
            try:
                with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code in (401, 403):
                        raise InvalidInput(
                            f"Label Studio refused the image ({resp.status_code}); "
                            "the backend's token lacks access"
                        )
                    if resp.status_code >= 500:
                        raise UpstreamError(f"Label Studio answered {resp.status_code}")
                    if resp.status_code != 200:
                        raise InvalidInput(f"image fetch failed with HTTP {resp.status_code}")
                    chunks: list[bytes] = []
                    total = 0
                    for chunk in resp.iter_bytes():
                        total += len(chunk)
                        if total > self.max_bytes:
                            raise InvalidInput(f"image is larger than {self.max_bytes} bytes")
                        chunks.append(chunk)
            except httpx.HTTPError as exc:
                raise UpstreamError(f"image could not be fetched from Label Studio: {exc}") from exc
        return b"".join(chunks)


@dataclass(frozen=True)
class _Source:
    """A checked image source: a local file inside the roots, or a Label Studio URL."""

    local: Path | None = None
    url: str = ""
    upload: bool = False


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _parse(url: str) -> urllib.parse.ParseResult:
    try:
        return urllib.parse.urlparse(url)
    except ValueError as exc:  # e.g. "http://[::1" (unbalanced IPv6 brackets)
        raise InvalidInput(f"image URL {url[:80]!r} is malformed: {exc}") from exc
