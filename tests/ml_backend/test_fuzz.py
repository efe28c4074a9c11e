"""Hostile input at scale: every response is 2xx/4xx with a JSON error, never a 5xx.

The real server (real LiteMedSAM predictor, real image decoding, HTTP Basic auth) runs on
loopback; two real HTTP servers stand in for Label Studio (``ls_host``, serving real and
broken uploads) and for any other machine (``evil``, which must never be contacted). Four
generators drive it:

1. schemathesis on the server's own OpenAPI document (``/openapi.json``), every operation in
   positive (schema-valid) and negative (schema-violating) mode;
2. hypothesis strategies for Label Studio-shaped bodies with mutations: NaN/inf/huge/negative/
   rotated/outside boxes, wrong types anywhere, unicode, unknown labels, hostile XML, image URLs
   to real images, broken images, other hosts and schemes, traversal and local-file escapes;
3. raw bodies: random bytes, deep nesting, non-standard JSON literals, other encodings and
   content types;
4. auth: every method and path (known or not) with missing or malformed credentials.

Case counts are printed (run with ``-s``) and written to ``test-artifacts/fuzz.json``. The
default run is sized for CI; ``MEDCROWD_FUZZ_EXAMPLES=N`` (default 100) scales every
generator.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from medcrowd.embedded import free_port
from ml_backend.cache import EmbeddingCache
from ml_backend.config import BackendConfig
from ml_backend.images import decode_image
from ml_backend.predictors import LiteMedSAMPredictor
from ml_backend.rle import rle_to_mask
from ml_backend.server import create_app
from tests.helpers import XML, ImageHost, ThreadedServer, box_context

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MEDCROWD_FUZZ_EXAMPLES", "100"))
ARTIFACTS = Path(os.environ.get("MEDCROWD_TEST_ARTIFACTS", "test-artifacts"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- bookkeeping -----------------------------------------------------------------------------------
@dataclass
class Tally:
    """Cases per generator and status codes, shared by the module's tests."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    predictions: int = 0

    def record(self, generator: str, resp: httpx.Response | Any, what: str) -> None:
        self.cases[generator] += 1
        self.statuses[resp.status_code] += 1
        if resp.status_code >= 500:
            self.server_errors.append(f"{resp.status_code} {what[:300]} -> {resp.text[:300]}")
        if resp.status_code == 200 and '"brushlabels"' in resp.text:
            self.predictions += 1


TALLY = Tally()


def check(generator: str, resp: httpx.Response | Any, what: str, method: str = "POST") -> None:
    """The property every response must have."""
    TALLY.record(generator, resp, what)
    assert resp.status_code < 500, f"{resp.status_code} for {what[:500]}: {resp.text[:500]}"
    assert "Traceback" not in resp.text
    if resp.status_code >= 400 and method != "HEAD":
        body = resp.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), resp.text[:300]


# -- the hosts, files and server -------------------------------------------------------------------
def encode(image: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def hostile_files(shared_data: Path) -> dict[str, bytes]:
    """Real images plus every awkward or broken file a task could point at."""
    demo = shared_data / "sammed2d_demo" / "images"
    em = shared_data / "isbi2012_em" / "train" / "image"
    rng = np.random.default_rng(0)
    nan_float = rng.random((40, 50), dtype=np.float32)
    nan_float[3, 4] = np.nan
    png = encode(Image.fromarray(np.zeros((30, 30), np.uint8)))
    return {
        "ct.png": (demo / "s0619_32.png").read_bytes(),
        "ct2.png": (demo / "amos_0004_75.png").read_bytes(),
        "em.png": (em / "3.png").read_bytes(),
        "fundus.tif": (shared_data / "drive" / "test" / "images" / "01_test.tif").read_bytes(),
        "u16.png": encode(Image.fromarray((rng.random((64, 48)) * 65535).astype(np.uint16))),
        "f32.tif": encode(Image.fromarray(rng.random((40, 50), dtype=np.float32)), "TIFF"),
        "nan.tif": encode(Image.fromarray(nan_float), "TIFF"),
        "i32neg.tif": encode(Image.fromarray(np.full((20, 20), -5, np.int32)), "TIFF"),
        "pal.png": encode(Image.fromarray(np.zeros((30, 30), np.uint8)).convert("P")),
        "rgba.png": encode(Image.new("RGBA", (30, 20), (1, 2, 3, 4))),
        "la.png": encode(Image.new("LA", (30, 20))),
        "bilevel.png": encode(Image.new("1", (30, 20))),
        "cmyk.jpg": encode(Image.new("CMYK", (30, 20)), "JPEG"),
        "anim.gif": encode(
            Image.new("P", (30, 20)), "GIF", save_all=True, append_images=[Image.new("P", (30, 20))]
        ),
        "1x1.png": encode(Image.new("L", (1, 1))),
        "strip.png": encode(Image.new("L", (5000, 2))),
        "wide.png": encode(Image.new("L", (9000, 3))),
        "bomb.png": encode(Image.new("1", (20000, 20000))),  # 400 Mpx in a few KiB
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
        "text.png": b"<html>not an image</html>",
        "svg.png": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
    }


@dataclass
class Fuzz:
    url: str
    auth: tuple[str, str]
    good_auth: str
    ls_host: ImageHost
    evil: ImageHost
    names: list[str]
    predictor: Any
    shared_data: Path


@pytest.fixture(scope="module")
def fuzz(
    lite: LiteMedSAMPredictor, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fuzz]:
    files = hostile_files(shared_data)
    ls_host = ImageHost(files={f"1/{name}": data for name, data in files.items()})
    evil = ImageHost(files={f"1/{name}": data for name, data in files.items()})
    root = tmp_path_factory.mktemp("fuzz-files")
    served = root / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    (root / "secret.png").write_bytes(files["ct.png"])
    (served / "escape.png").symlink_to(root / "secret.png")
    port = free_port()
    auth = ("labelstudio", secrets.token_urlsafe(12))
    # The session's loaded model with a cache of its own (as the fresh_lite fixture does).
    predictor = LiteMedSAMPredictor(
        lite.net,
        checkpoint_sha256=lite.checkpoint_sha256,
        device="cpu",
        cache=EmbeddingCache(),
        encoder_onnx=lite.encoder_onnx,
        decoder_onnx=lite.decoder_onnx,
    )
    predictor.decoder_backend = lite.decoder_backend
    config = BackendConfig(
        port=port,
        basic_auth=auth,
        label_studio_url=ls_host.url,
        label_studio_token=secrets.token_hex(20),
        local_files_root=served,
        max_body_bytes=4 * 1024 * 1024,  # deep-nesting bodies stay quick to send
    )
    good = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    with ThreadedServer(create_app(config, predictor=predictor), port):
        yield Fuzz(
            f"http://127.0.0.1:{port}",
            auth,
            good,
            ls_host,
            evil,
            sorted(files),
            predictor,
            shared_data,
        )
    ls_host.close()
    evil.close()


@pytest.fixture(scope="module")
def client(fuzz: Fuzz) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz.url, auth=fuzz.auth, timeout=120) as c:
        yield c


# -- strategies ------------------------------------------------------------------------------------
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.recursive(st.none(), lambda inner: st.lists(inner, max_size=2), max_leaves=20),
)
percent = st.floats(min_value=-20, max_value=120, allow_nan=False)
number = st.one_of(percent, percent, percent, st.floats(), st.integers(-(10**6), 10**6), junk)
label = st.one_of(
    st.sampled_from(["Organ", "Lesion", "Vessel"]),
    st.sampled_from(["Spleen", "", "organ", "Organ ", "Órgano", "器官", "\x00", "<Organ/>"]),
    st.text(max_size=12),
)
labels = st.one_of(st.lists(label, min_size=1, max_size=2), junk)
box_value = st.fixed_dictionaries(
    {"x": number, "y": number, "width": number, "height": number},
    optional={
        "rotation": st.one_of(st.just(0), st.just(0.0), st.just(None), number),
        "rectanglelabels": labels,
    },
)
good_box = st.fixed_dictionaries(
    {
        "x": st.floats(0, 60),
        "y": st.floats(0, 60),
        "width": st.floats(5, 40),
        "height": st.floats(5, 40),
        "rotation": st.just(0),
        "rectanglelabels": st.sampled_from([["Organ"], ["Lesion"], ["Vessel"]]),
    }
)
region = st.fixed_dictionaries(
    {
        "type": st.one_of(
            st.just("rectanglelabels"),
            st.just("rectanglelabels"),
            st.sampled_from(["brushlabels", "keypointlabels", "polygonlabels", "", "RECT"]),
            junk,
        ),
        "value": st.one_of(good_box, box_value, box_value, junk),
    },
    optional={
        "original_width": st.one_of(st.integers(-5, 10**6), junk),
        "original_height": st.one_of(st.integers(-5, 10**6), junk),
        "image_rotation": st.one_of(st.just(0), number),
        "from_name": st.one_of(st.just("box"), st.text(max_size=10)),
        "to_name": st.one_of(st.just("image"), st.text(max_size=10)),
    },
)
context = st.one_of(
    st.fixed_dictionaries({"result": st.lists(region, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"result": st.lists(region, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"result": st.one_of(st.just([]), junk)}),
    st.just({}),
    junk,
)
HOSTILE_XML = [
    "",
    "   ",
    "<View>",
    "<View><Image name='image' value='$image'/></View>",
    "<View><BrushLabels name='m' toName='nope'/></View>",
    "<View><Image name='i' value='image'/><BrushLabels name='m' toName='i'/></View>",
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    "<View>&lol2;</View>",
    '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><View>&xxe;</View>',
    "<View>" + "<View>" * 5000 + "</View>" * 5000 + "</View>",
    "<View><Image name='" + "i" * 10000 + "' value='$image'/></View>",
    XML.replace('value="$image"', 'value="$ünïcödé"'),
    XML.replace('<Label value="Organ"', '<Label value=""'),
    "x" * 300_000,  # longer than the label_config limit
]
label_config = st.one_of(
    st.just(XML),
    st.just(XML),
    st.just(XML),
    st.sampled_from(HOSTILE_XML),
    st.text(max_size=60),
    junk,
)


def image_urls(fuzz: Fuzz) -> st.SearchStrategy[Any]:
    ls, evil = fuzz.ls_host.port, fuzz.evil.port
    local = [f"/data/local-files/?d={name}" for name in fuzz.names]
    uploads = [f"/data/upload/1/{name}" for name in fuzz.names]
    real = ["ct.png", "ct2.png", "em.png", "fundus.tif"]
    escapes = [
        "/data/local-files/?d=../secret.png",
        "/data/local-files/?d=escape.png",
        "/data/local-files/?d=%2e%2e/secret.png",
        "/data/local-files/?d=/etc/passwd",
        "/data/local-files/?d=a%00b",
        "/data/local-files/?d=",
        "/data/local-files/",
        "/data/local-files/?d=" + "d/" * 3000,
        "/data/upload/../../api/projects",
        "/data/upload/%2e%2e/%2e%2e/api/projects",
        f"http://127.0.0.1:{evil}/data/upload/1/ct.png",
        f"http://localhost:{ls}/data/upload/1/ct.png",
        f"http://127.1:{ls}/data/upload/1/ct.png",
        f"http://[::1]:{ls}/data/upload/1/ct.png",
        f"http://0x7f000001:{ls}/data/upload/1/ct.png",
        f"http://ls@127.0.0.1:{evil}/data/upload/1/ct.png",
        f"http://127.0.0.1:{evil}\\@127.0.0.1:{ls}/data/upload/1/ct.png",
        f"/redirect?to=http://127.0.0.1:{evil}/data/upload/1/ct.png",
        f"//127.0.0.1:{evil}/data/upload/1/ct.png",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{evil}/_x",
        "ftp://127.0.0.1/x.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "http://[::1",
        f"http://127.0.0.1:{ls}:99/x",
        "http://127.0.0.1:99999/x",
    ]
    return st.one_of(
        st.sampled_from([f"/data/local-files/?d={n}" for n in real]),
        st.sampled_from([f"/data/upload/1/{n}" for n in real]),
        st.sampled_from(local),
        st.sampled_from(uploads),
        st.sampled_from(escapes),
        st.text(max_size=40),
        junk,
    )


def task_strategy(fuzz: Fuzz) -> st.SearchStrategy[Any]:
    url = image_urls(fuzz)
    return st.one_of(
        st.fixed_dictionaries({"id": st.integers(), "data": st.fixed_dictionaries({"image": url})}),
        st.fixed_dictionaries({"id": st.integers(), "data": st.fixed_dictionaries({"image": url})}),
        st.fixed_dictionaries({"data": st.one_of(junk, st.dictionaries(st.text(), url))}),
        junk,
    )


def predict_bodies(fuzz: Fuzz) -> st.SearchStrategy[dict[str, Any]]:
    task = task_strategy(fuzz)
    params = st.one_of(
        st.fixed_dictionaries({"context": context}, optional={"login": junk, "password": junk}),
        junk,
    )
    complete = st.fixed_dictionaries(
        {"tasks": st.lists(task, min_size=1, max_size=3), "label_config": label_config,
         "params": params},
        optional={"project": st.one_of(st.just("1.1795445030"), junk)},
    )  # fmt: skip
    partial = st.fixed_dictionaries(
        {},
        optional={
            "tasks": st.one_of(st.lists(task, max_size=2), junk),
            "label_config": label_config,
            "params": params,
        },
    )
    extra = st.dictionaries(st.text(max_size=8), junk, max_size=2)
    with_extra = st.tuples(partial, extra).map(lambda pair: {**pair[1], **pair[0]})
    # Valid but for the box: reaches the model with every kind of rectangle.
    real = ["ct.png", "ct2.png", "em.png", "fundus.tif", "u16.png", "f32.tif", "rgba.png"]
    image = st.one_of(
        st.sampled_from([f"/data/local-files/?d={name}" for name in real]),
        st.sampled_from([f"/data/upload/1/{name}" for name in real]),
    )
    rectangle = st.fixed_dictionaries(
        {"type": st.just("rectanglelabels"), "value": st.one_of(good_box, box_value)},
        optional={"from_name": st.just("box"), "to_name": st.just("image")},
    )
    near_valid = st.fixed_dictionaries(
        {
            "tasks": st.lists(
                st.fixed_dictionaries({"id": st.integers(0, 10**6),
                                       "data": st.fixed_dictionaries({"image": image})}),
                min_size=1, max_size=2,
            ),
            "label_config": st.just(XML),
            "params": st.fixed_dictionaries(
                {"context": st.fixed_dictionaries(
                    {"result": st.lists(rectangle, min_size=1, max_size=2)})}
            ),
        }
    )  # fmt: skip
    return st.one_of(near_valid, near_valid, complete, complete, with_extra)


def other_bodies(fuzz: Fuzz) -> st.SearchStrategy[tuple[str, Any]]:
    setup = st.fixed_dictionaries(
        {},
        optional={
            "schema": label_config,
            "project": junk,
            "hostname": st.one_of(st.text(max_size=30), junk),
            "access_token": junk,
            "extra_params": junk,
        },
    )
    webhook = st.fixed_dictionaries(
        {"action": st.one_of(st.just("TASKS_CREATED"), st.text(max_size=15), junk)},
        optional={
            "tasks": st.one_of(st.lists(task_strategy(fuzz), max_size=4), junk),
            "project": st.one_of(st.fixed_dictionaries({"label_config": label_config}), junk),
        },
    )
    return st.one_of(st.tuples(st.just("/setup"), setup), st.tuples(st.just("/webhook"), webhook))


def deep(opener: bytes, closer: bytes, depth: int, middle: bytes = b"1") -> bytes:
    return opener * depth + middle + closer * depth


VALID = json.dumps(
    {
        "tasks": [{"id": 1, "data": {"image": "/data/local-files/?d=ct.png"}}],
        "label_config": XML,
        "params": {"context": box_context([20, 20, 120, 120], 225, 155)},
    }
)
RAW_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"123",
    b"{",
    b"{}" * 3,
    b"\xef\xbb\xbf" + VALID.encode(),  # UTF-8 BOM
    VALID.encode("utf-16"),
    VALID.encode("utf-32"),
    VALID.replace('"x": ', '"x": NaN, "_x": ').encode(),
    VALID.replace('"x": ', '"x": Infinity, "_x": ').encode(),
    VALID.replace('"width": ', '"width": 1e999, "_w": ').encode(),
    VALID.replace('"width": ', '"width": -1e999, "_w": ').encode(),
    VALID.replace('"y": ', '"y": ' + "9" * 5000 + ', "_y": ').encode(),
    VALID.replace('"rotation": 0', '"rotation": 1e999').encode(),
    VALID.replace('"rotation": 0', '"rotation": "abc"').encode(),
    VALID.replace('"rotation": 0', '"rotation": [1]').encode(),
    VALID.replace('"rotation": 0', '"rotation": ' + "1" * 400).encode(),
    VALID.replace('"x": ', '"x": ' + "1" * 400 + ', "_x": ').encode(),
    deep(b"[", b"]", 100_000),
    deep(b'{"a":', b"}", 100_000),
    deep(b'{"tasks":[', b"]}", 50_000),
    b'{"tasks": [' + b'{"data": {"image": "/data/local-files/?d=ct.png"}},' * 20_000 + b"{}]}",
    VALID.encode().replace(b"ct.png", b"ct.png\x00"),
    b'{"a": "\\ud800"}',  # a lone surrogate
    b'{"a": "' + b"\xff\xfe" * 10 + b'"}',
]
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/json; charset=latin-1",
    "image/png",
    "",
    "\x7f/\x7f",
]


# -- 1. schemathesis -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_every_operation(fuzz: Fuzz, client: httpx.Client, mode: str) -> None:
    document = client.get("/openapi.json")
    assert document.status_code == 200
    schema = schemathesis.openapi.from_dict(document.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /health",
        "POST /setup",
        "POST /predict",
        "POST /webhook",
    }
    generation = schemathesis.GenerationMode(mode)
    for operation in operations:
        if mode == "negative" and operation.label == "GET /health":
            continue  # no parameters and no body: nothing to violate

        @settings(SETTINGS, max_examples=max(10, EXAMPLES // 3))
        @given(case=operation.as_strategy(generation_mode=generation))
        def run(case: schemathesis.Case) -> None:
            case.headers = {**(case.headers or {}), "Authorization": fuzz.good_auth}
            resp = case.call(base_url=fuzz.url, timeout=120)
            check(f"schemathesis-{mode}", resp, f"{case.method} {case.path} {case.body!r}")

        run()


# -- 2. Label Studio-shaped bodies with mutations --------------------------------------------------
def test_contract_shaped_bodies(fuzz: Fuzz, client: httpx.Client) -> None:
    @settings(SETTINGS, max_examples=2 * EXAMPLES)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        if data.draw(st.integers(0, 4), label="route") == 0:
            path, body = data.draw(other_bodies(fuzz), label="body")
        else:
            path, body = "/predict", data.draw(predict_bodies(fuzz), label="body")
        payload = json.dumps(body, allow_nan=True)  # NaN/Infinity literals are fuzz too
        resp = client.post(path, content=payload, headers={"content-type": "application/json"})
        check("contract", resp, f"{path} {payload}")

    run()
    assert fuzz.evil.hits == [], "the backend contacted a host other than Label Studio"


# -- 3. raw bodies ---------------------------------------------------------------------------------
def test_raw_bodies(fuzz: Fuzz, client: httpx.Client) -> None:
    raw = st.one_of(
        st.sampled_from(RAW_BODIES),
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        st.recursive(
            st.one_of(st.none(), st.integers(), st.text(max_size=5)),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=30,
        ).map(lambda v: json.dumps(v).encode()),
    )

    @settings(SETTINGS)
    @given(
        path=st.sampled_from(["/predict", "/predict", "/setup", "/webhook"]),
        body=raw,
        content_type=st.sampled_from(CONTENT_TYPES),
    )
    def run(path: str, body: bytes, content_type: str) -> None:
        headers = {"content-type": content_type} if content_type else {}
        resp = client.post(path, content=body, headers=headers)
        check("raw", resp, f"{path} {content_type!r} {body[:200]!r}")

    run()
    # every fixed hostile body at least once, whatever hypothesis drew
    for body in RAW_BODIES:
        resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
        check("raw", resp, f"/predict {body[:200]!r}")


# -- 4. auth on every method and path --------------------------------------------------------------
def test_auth_everywhere(fuzz: Fuzz) -> None:
    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    header = st.one_of(
        st.none(),
        st.just("Basic"),
        st.just(basic(f"{fuzz.auth[0]}:wrong")),
        st.just(basic(f"{fuzz.auth[0]}:{fuzz.auth[1]}x")),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        st.text(max_size=20).map(basic),
        st.binary(max_size=30).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    ).map(lambda h: h.strip() if h else h)  # HTTP clients refuse surrounding whitespace
    path = st.one_of(
        st.sampled_from(["/setup", "/predict", "/webhook", "/openapi.json", "/docs", "/"]),
        st.sampled_from(["/predict/", "//predict", "/PREDICT", "/health/", "/health/../predict"]),
        st.text(alphabet="abcdefghij/._%-", max_size=20).map(lambda p: "/" + p),
    )

    @settings(SETTINGS)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
        path=path,
        header=header,
    )
    def run(method: str, path: str, header: str | None) -> None:
        headers = {"authorization": header} if header is not None else {}
        content = VALID.encode() if method in ("POST", "PUT", "PATCH") else None
        with httpx.Client(base_url=fuzz.url, timeout=60) as anonymous:
            resp = anonymous.request(method, path, headers=headers, content=content)
        check("auth", resp, f"{method} {path} {header!r}", method)
        if resp.url.path != "/health":
            assert resp.status_code in (400, 401), (method, path, header, resp.status_code)

    run()


# -- afterwards: alive, correct, and the counts ----------------------------------------------------
def test_server_alive_and_correct_after_fuzzing(fuzz: Fuzz, client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "UP"
    ct = fuzz.shared_data / "sammed2d_demo" / "images" / "s0619_32.png"
    image = decode_image(ct.read_bytes(), 10**8)
    resp = client.post("/predict", content=VALID, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    brush = resp.json()["results"][0]["result"][0]
    got = rle_to_mask(brush["value"]["rle"], *image.shape[:2])
    fuzz.predictor.set_image(image)
    expected, _ = fuzz.predictor.predict_box([20.0, 20.0, 120.0, 120.0])
    np.testing.assert_array_equal(got, expected)
    assert fuzz.evil.hits == []

    total = sum(TALLY.cases.values())
    summary = {
        "examples_setting": EXAMPLES,
        "cases": total,
        "by_generator": dict(TALLY.cases),
        "statuses": {str(k): v for k, v in sorted(TALLY.statuses.items())},
        "server_errors": len(TALLY.server_errors),
        "predictions_returned": TALLY.predictions,
        "other_host_requests": len(fuzz.evil.hits),
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "fuzz.json").write_text(json.dumps(summary, indent=2))
    print(f"\nfuzz: {total} cases, {len(TALLY.server_errors)} 5xx")
    print(f"  by generator: {dict(TALLY.cases)}")
    print(f"  status codes: {summary['statuses']}")
    print(f"  masks returned: {TALLY.predictions}; requests to other hosts: {len(fuzz.evil.hits)}")
    assert TALLY.server_errors == []
    assert total >= 4 * EXAMPLES  # the generators really ran
