"""Volunteers cannot break or peek: the permission matrix against a real Label Studio.

Label Studio is started with medcrowd's plugin (``DJANGO_SETTINGS_MODULE=
medcrowd.lsplugin.settings``) through the same ``LabelStudioProcess(roles=True)`` that
``medcrowd up --roles`` uses. The
admin makes a project with tasks, a gold annotation and a stored prediction; volunteers A and
B sign up through the invitation link; an expert signs up and is promoted to staff.

Every route of the live URL configuration (walked inside Label Studio's Django environment)
is classified by :mod:`medcrowd.lsplugin.policy` for every method; none may be
unclassified. Every refused (route, method) is then called as volunteer A — logged in through
the web form (session cookie + CSRF) and again with A's API token — with real ids in the URL
(A's own task, B's annotation, the project, the admin's user id, ...) and must answer 403 with
the policy's JSON message. The allowed ones are exercised on A's own objects and refused on
other people's; the task JSON A reads holds only A's work. Staff keep every right.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from medcrowd.lsplugin import policy
from medcrowd.settings import config_path
from medcrowd.studio import Studio
from tests.helpers import label_studio_process

pytestmark = pytest.mark.e2e

SETTINGS_MODULE = "medcrowd.lsplugin.settings"
RATE_PER_MINUTE = 10
PASSWORD = "Crowd-pass-2026!"
BOX = [{
    "from_name": "box", "to_name": "image", "type": "rectanglelabels",
    "original_width": 32, "original_height": 32,
    "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["Organ"]},
}]  # fmt: skip


# -- Label Studio with the plugin ----------------------------------------------------------
@dataclass
class Plugged:
    url: str
    admin: Studio
    admin_email: str
    data_dir: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugged]:
    data_dir = tmp_path_factory.mktemp("ls-plugin")
    extra = {"MEDCROWD_AUTH_RATE_PER_MINUTE": str(RATE_PER_MINUTE)}
    # roles: DJANGO_SETTINGS_MODULE=medcrowd.lsplugin.settings, as `up --roles` does
    with label_studio_process(data_dir, roles=True, env=extra) as proc:
        env = {**proc.environment(), **extra}  # what the child got
        yield Plugged(proc.url, Studio(proc.url, proc.token), proc.email, data_dir, env)


def _django(env: dict[str, str], script: str, payload: Any) -> Any:
    """Run ``script`` inside Label Studio's Django environment (the plugin's settings)."""
    prelude = (
        "import json, os, sys\n"
        "import label_studio\n"
        "sys.path.insert(0, os.path.dirname(label_studio.__file__))\n"
        "import django\n"
        "django.setup()\n"
        "payload = json.loads(sys.stdin.read())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env={**env, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE},
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


_ROUTES = "from medcrowd.lsplugin.routes import all_routes\nprint(json.dumps(all_routes()))\n"
_RESOLVE = (
    "from django.urls import Resolver404, resolve\n"
    "def route(path):\n"
    "    try:\n"
    "        return resolve(path).route\n"
    "    except Resolver404:\n"
    "        return None\n"
    "print(json.dumps({p: route(p) for p in payload}))\n"
)


# -- people --------------------------------------------------------------------------------
@dataclass
class Person:
    email: str
    id: int
    token: str
    session: httpx.Client = field(repr=False)

    def csrf_headers(self, url: str) -> dict[str, str]:
        return {"X-CSRFToken": self.session.cookies.get("csrftoken") or "", "Referer": url + "/"}


def web_login(url: str, email: str, password: str) -> httpx.Client:
    """Log in through Label Studio's login form, as a browser does (CSRF cookie + field)."""
    client = httpx.Client(base_url=url, timeout=60.0)
    client.get("/user/login/")
    resp = client.post(
        "/user/login/",
        data={
            "email": email,
            "password": password,
            "csrfmiddlewaretoken": client.cookies.get("csrftoken") or "",
        },
        headers={"Referer": f"{url}/user/login/"},
    )
    assert resp.status_code == 302, resp.text[:300]
    return client


def _person(plugged: Plugged, email: str) -> Person:
    uid, token = plugged.admin.create_volunteer(email, PASSWORD)
    return Person(email, uid, token, web_login(plugged.url, email, PASSWORD))


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class World:
    project: int
    tasks: list[int]
    a: Person
    b: Person
    expert: Person
    task_a: int  # served to A by the queue
    other_task: int  # in another project of the organisation; never served to anyone
    ann_a: int
    ann_b: int  # B's annotation, on A's task
    gold: int  # the admin's ground-truth annotation, on A's task
    draft_a: int
    prediction: int  # a stored prediction on A's task (fused consensus)
    admin_id: int
    upload_a: str  # /data/upload/... of A's task image
    upload_other: str


@pytest.fixture(scope="module")
def world(plugged: Plugged) -> World:
    admin = plugged.admin
    label_config = config_path("labeling_box_brush.xml").read_text()
    project = admin.ensure_project(f"perm-{secrets.token_hex(3)}", label_config, 2)
    admin.import_images(project, [(f"img{i}.png", _png(i)) for i in range(4)])
    tasks = sorted(t.id for t in admin.tasks(project))
    # a second project whose tasks nobody is ever served
    hidden_project = admin.ensure_project(f"hidden-{secrets.token_hex(3)}", label_config, 1)
    admin.import_images(hidden_project, [("hidden.png", _png(50))])
    (hidden,) = admin.tasks(hidden_project)
    a = _person(plugged, "vol-a@example.com")
    b = _person(plugged, "vol-b@example.com")
    expert = _person(plugged, "expert@example.com")
    resp = admin.request(
        "POST", "/medcrowd/api/roles/", json={"email": expert.email, "role": "staff"}
    )
    assert resp.json()["role"] == "staff"

    served = a.session.get(f"/api/projects/{project}/next")
    assert served.status_code == 200, served.text[:300]
    task_a = int(served.json()["id"])
    ann_a = a.session.post(
        f"/api/tasks/{task_a}/annotations/",
        json={"result": BOX},
        headers=a.csrf_headers(plugged.url),
    )
    assert ann_a.status_code == 201, ann_a.text[:300]
    draft = httpx.post(
        f"{plugged.url}/api/tasks/{task_a}/drafts",
        json={"result": BOX, "lead_time": 1.0},
        headers={"Authorization": f"Token {a.token}"},
    )
    assert draft.status_code == 201, draft.text[:300]
    ann_b = admin.request(
        "POST", f"/api/tasks/{task_a}/annotations/", json={"result": BOX, "completed_by": b.id}
    ).json()["id"]
    gold = admin.create_annotation(task_a, BOX, ground_truth=True)
    prediction = admin.request(
        "POST",
        "/api/predictions/",
        json={"task": task_a, "result": BOX, "model_version": "consensus-staple", "score": 1.0},
    ).json()["id"]
    data = {t.id: t.data for t in admin.tasks(project)}
    other = hidden.id
    admin_id = next(uid for uid, email in admin.users().items() if email == plugged.admin_email)
    return World(
        project, tasks, a, b, expert, task_a, other, int(ann_a.json()["id"]), int(ann_b),
        gold, int(draft.json()["id"]), int(prediction), admin_id,
        str(data[task_a]["image"]), str(hidden.data["image"]),
    )  # fmt: skip


# -- the matrix ----------------------------------------------------------------------------
_GROUP = re.compile(r"\(\?P<(\w+)>([^)]*)\)")
_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


def _pk(route: str, w: World) -> int:
    prefixes = [
        (("^api/projects/", "^projects/", "^api/dm/"), w.project),
        (("^api/tasks/", "^tasks/"), w.task_a),
        (("^api/annotations/",), w.ann_b),
        (("^api/drafts/",), w.draft_a),
        (("^api/users",), w.admin_id),
        (("^api/predictions",), w.prediction),
    ]
    for starts, value in prefixes:
        if route.startswith(starts):
            return value
    return 1


def sample_path(route: str, w: World) -> str:
    """A concrete URL for ``route``, with real ids where the route names an object."""
    values = {
        "pk": str(_pk(route, w)),
        "task_id": str(w.task_a),
        "project_id": str(w.project),
        "annotation_id": str(w.ann_b),
        "user_pk": str(w.admin_id),
        "entity_id": str(w.task_a),
        "entity_name": "task",
        "filename": w.upload_other.removeprefix("/data/upload/"),
        "format": "json",
        "action_id": "delete_tasks",
        "queue_index": "0",
        "scheduler_index": "0",
    }

    def group(m: re.Match[str]) -> str:
        name, body = m.group(1), m.group(2)
        if name in values:
            return values[name]
        return body.split("|")[0] if "|" in body else "1"

    path = route.replace("<drf_format_suffix:format>", ".json")
    path = _GROUP.sub(group, path)
    path = _CONVERTER.sub(lambda m: values.get(m.group(2), "1"), path)
    path = path.replace("^", "").replace("$", "").replace("/?", "/").replace("\\.", ".")
    return "/" + path


@pytest.fixture(scope="module")
def matrix(plugged: Plugged, world: World) -> dict[str, dict[str, str]]:
    """{route: {method: decision}} for every route of the live URL configuration."""
    routes = _django(plugged.env, _ROUTES, None)
    assert len(routes) > 300  # Label Studio 1.23 has ~350; a broken walk finds few
    return {r: {m: policy.decide(r, m) for m in policy.METHODS} for r in routes}


def test_every_route_is_classified(matrix: dict[str, dict[str, str]]) -> None:
    unclassified = [
        (r, m) for r, row in matrix.items() for m, d in row.items() if d == "unclassified"
    ]
    assert unclassified == []
    # the allow-list names only routes that exist
    assert set(policy.ALLOWED) | set(policy.REDIRECTS) <= set(matrix)


@pytest.fixture(scope="module")
def samples(plugged: Plugged, world: World, matrix: dict[str, dict[str, str]]) -> dict[str, str]:
    """{route: a path that resolves to it}; routes shadowed by an earlier one are left out."""
    paths = {route: sample_path(route, world) for route in matrix}
    resolved = _django(plugged.env, _RESOLVE, sorted(set(paths.values())))
    reachable = {r: p for r, p in paths.items() if resolved[p] == r}
    # A few routes cannot be reached by any path (an earlier route with the same prefix wins,
    # e.g. the routers' duplicate API roots); most must be.
    assert len(reachable) > 0.9 * len(paths), sorted(set(paths) - set(reachable))
    return reachable


def _call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = None if method in ("GET", "DELETE") else b"{}"
    hdrs = {**headers, "Content-Type": "application/json"} if body else headers
    return client.request(method, path, content=body, headers=hdrs)


@pytest.mark.parametrize("mode", ["session", "token"])
def test_refused_routes_answer_403(
    plugged: Plugged,
    world: World,
    matrix: dict[str, dict[str, str]],
    samples: dict[str, str],
    mode: str,
) -> None:
    a = world.a
    if mode == "session":
        client, headers = a.session, a.csrf_headers(plugged.url)
    else:
        client = httpx.Client(base_url=plugged.url, timeout=60.0)
        headers = {"Authorization": f"Token {a.token}"}
    cells = [
        (route, path, method, decision)
        for route, path in samples.items()
        for method, decision in matrix[route].items()
        if decision in ("refused", "redirect")
    ]

    def check(cell: tuple[str, str, str, str]) -> str | None:
        route, path, method, decision = cell
        resp = _call(client, method, path, headers)
        if decision == "redirect":
            ok = resp.status_code == 302 and resp.headers["location"] == policy.ME_URL
        else:
            ok = resp.status_code == 403 and _detail(resp) == policy.REFUSED_DETAIL
        return None if ok else f"{method} {path} ({route}): {resp.status_code} {resp.text[:120]}"

    with ThreadPoolExecutor(4) as pool:  # Label Studio's server is threaded
        wrong = [w for w in pool.map(check, cells) if w is not None]
    called = len(cells)
    assert called > 1000
    assert wrong == []
    # the project and A's task are untouched after every refused write
    assert plugged.admin.request("GET", f"/api/tasks/{world.task_a}/").status_code == 200


def _detail(resp: httpx.Response) -> Any:
    try:
        return resp.json().get("detail")
    except (ValueError, AttributeError):
        return None


def test_the_reported_holes_are_closed(plugged: Plugged, world: World) -> None:
    """The calls a fresh volunteer could make before the plugin (issue 14)."""
    a = world.a
    for headers, client in [
        (a.csrf_headers(plugged.url), a.session),
        ({"Authorization": f"Token {a.token}"}, httpx.Client(base_url=plugged.url)),
    ]:
        for method, path, body in [
            ("PATCH", f"/api/projects/{world.project}/", {"title": "renamed"}),
            ("DELETE", f"/api/tasks/{world.other_task}/", None),
            ("GET", f"/api/projects/{world.project}/export", None),
            ("GET", "/api/users/1/", None),
            ("GET", "/api/ml/1", None),
        ]:
            resp = client.request(method, path, json=body, headers=headers)
            assert resp.status_code == 403, (method, path, resp.text[:200])
            assert _detail(resp) == policy.REFUSED_DETAIL
        # the lists the labelling page reads: refused without a project of theirs ...
        for path in ("/api/users/", "/api/ml/"):
            resp = client.get(path, headers=headers)
            assert resp.status_code == 403 and _detail(resp) == policy.NOT_YOURS_DETAIL
        # ... and with one, nobody else's e-mail and none of the ML backend's settings
        users = client.get("/api/users/", params={"project": world.project}, headers=headers)
        assert [u["email"] for u in users.json()] == [a.email]
        _no_one_else(users.text, plugged, world)
        ml = client.get("/api/ml/", params={"project": world.project}, headers=headers)
        assert ml.status_code == 200 and ml.json() == []  # no backend in this module
        # without the trailing slash Label Studio re-dispatches internally: still refused
        patched = client.request(
            "PATCH", f"/api/projects/{world.project}", json={"title": "x"}, headers=headers
        )
        assert patched.status_code == 403
    assert plugged.admin.project(world.project).title.startswith("perm-")


# -- what a volunteer may do, on their own objects only ------------------------------------
def _no_one_else(text: str, plugged: Plugged, world: World) -> None:
    for email in (plugged.admin_email, world.b.email, world.expert.email):
        assert email not in text


def test_served_task_shows_only_own_work(plugged: Plugged, world: World) -> None:
    a = world.a
    for resp in (
        a.session.get(f"/api/tasks/{world.task_a}/"),
        httpx.get(
            f"{plugged.url}/api/tasks/{world.task_a}/",
            headers={"Authorization": f"Token {a.token}"},
        ),
    ):
        assert resp.status_code == 200
        task = resp.json()
        assert [x["id"] for x in task["annotations"]] == [world.ann_a]
        assert [d["id"] for d in task["drafts"]] == [world.draft_a]
        assert task["predictions"] == []
        assert set(task) <= {"id", "data", "project", "annotations", "drafts", "predictions",
                             "created_at", "inner_id"}  # fmt: skip
        _no_one_else(resp.text, plugged, world)
    # staff still see everything on the same task
    full = plugged.admin.request("GET", f"/api/tasks/{world.task_a}/").json()
    assert {world.ann_a, world.ann_b, world.gold} <= {x["id"] for x in full["annotations"]}
    assert world.prediction in {p["id"] for p in full["predictions"]}


def test_next_project_config_and_whoami(plugged: Plugged, world: World) -> None:
    a = world.a
    nxt = a.session.get(f"/api/projects/{world.project}/next")
    assert nxt.status_code == 200
    assert nxt.json()["predictions"] == [] and "annotators" not in nxt.json()
    project = a.session.get(f"/api/projects/{world.project}/")
    assert project.status_code == 200
    assert "<RectangleLabels" in project.json()["label_config"]
    assert "created_by" not in project.json()
    _no_one_else(project.text, plugged, world)
    me = a.session.get("/api/current-user/whoami")
    assert me.json()["email"] == a.email and "permissions" not in me.json()
    _no_one_else(me.text, plugged, world)
    assert a.session.get(f"/api/projects/{world.project + 999}/").status_code == 403


def test_own_annotations_create_update_list(plugged: Plugged, world: World) -> None:
    a, h = world.a, world.a.csrf_headers(plugged.url)
    listed = a.session.get(f"/api/tasks/{world.task_a}/annotations/")
    assert listed.status_code == 200
    assert [x["id"] for x in listed.json()] == [world.ann_a]
    drafts = a.session.get(f"/api/tasks/{world.task_a}/drafts")
    assert drafts.status_code == 200
    assert [d["id"] for d in drafts.json()] == [world.draft_a]
    assert a.session.get(f"/api/annotations/{world.ann_a}/").status_code == 200
    # task_a is a gold task: once A has submitted there (and may see the feedback), A's
    # annotation is frozen
    frozen = a.session.patch(f"/api/annotations/{world.ann_a}/", json={"result": BOX}, headers=h)
    assert frozen.status_code == 403, frozen.text[:200]
    # on a task without gold, A's own annotation can be updated
    task = a.session.get(f"/api/projects/{world.project}/next").json()["id"]
    assert task != world.task_a
    made = a.session.post(f"/api/tasks/{task}/annotations/", json={"result": BOX}, headers=h)
    assert made.status_code == 201, made.text[:200]
    upd = a.session.patch(f"/api/annotations/{made.json()['id']}/", json={"result": BOX}, headers=h)
    assert upd.status_code == 200, upd.text[:200]
    plugged.admin.request("DELETE", f"/api/annotations/{made.json()['id']}/")


@pytest.mark.parametrize("target", ["b", "gold"])
def test_other_peoples_annotations_are_refused(plugged: Plugged, world: World, target: str) -> None:
    a, h = world.a, world.a.csrf_headers(plugged.url)
    ann = world.ann_b if target == "b" else world.gold
    for method in ("GET", "PATCH", "PUT"):
        resp = a.session.request(method, f"/api/annotations/{ann}/", json={"result": []}, headers=h)
        assert resp.status_code == 403 and _detail(resp) == policy.NOT_YOURS_DETAIL
    drafts = a.session.post(
        f"/api/tasks/{world.task_a}/annotations/{ann}/drafts", json={"result": []}, headers=h
    )
    assert drafts.status_code == 403


def test_annotation_bodies_cannot_make_gold_or_impersonate(plugged: Plugged, world: World) -> None:
    a, h = world.a, world.a.csrf_headers(plugged.url)
    url = f"/api/tasks/{world.task_a}/annotations/"
    for body in (
        {"result": BOX, "ground_truth": True},
        {"result": BOX, "completed_by": world.b.id},
        {"result": BOX, "task": world.other_task},
    ):
        resp = a.session.post(url, json=body, headers=h)
        assert resp.status_code == 403, body
    patch = a.session.patch(
        f"/api/annotations/{world.ann_a}/", json={"ground_truth": True}, headers=h
    )
    assert patch.status_code == 403
    moved = a.session.patch(
        f"/api/annotations/{world.ann_a}/", json={"task": world.other_task}, headers=h
    )
    assert moved.status_code == 403
    assert not plugged.admin.request("GET", f"/api/annotations/{world.ann_a}/").json()[
        "ground_truth"
    ]


def test_tasks_not_served_are_refused(plugged: Plugged, world: World) -> None:
    a, h = world.a, world.a.csrf_headers(plugged.url)
    assert a.session.get(f"/api/tasks/{world.other_task}/").status_code == 403
    post = a.session.post(
        f"/api/tasks/{world.other_task}/annotations/", json={"result": BOX}, headers=h
    )
    assert post.status_code == 403
    assert a.session.get(f"/api/tasks/{world.other_task}/drafts").status_code == 403


def test_images_of_own_tasks_only(world: World) -> None:
    a = world.a
    own = a.session.get(world.upload_a)
    assert own.status_code == 200 and own.content[:4] == b"\x89PNG"
    assert a.session.get(world.upload_other).status_code == 403


def test_interactive_prediction_needs_a_backend_of_the_project(world: World) -> None:
    # No ML backend is connected in this module: the object check refuses (a real backend is
    # exercised, with the admin token, by test_interactive.py).
    a = world.a
    resp = a.session.post(
        "/api/ml/1/interactive-annotating",
        json={"task": world.task_a, "context": {}},
        headers=a.csrf_headers(str(a.session.base_url).rstrip("/")),
    )
    assert resp.status_code == 403 and _detail(resp) == policy.NOT_YOURS_DETAIL


def test_labelling_stream_stand_ins(plugged: Plugged, world: World) -> None:
    """What the stock labelling stream (/projects/{id}/data/?labeling=1) calls works for A
    and shows nothing of anybody else's."""
    a, h = world.a, world.a.csrf_headers(plugged.url)
    q = {"project": world.project}
    views = a.session.get("/api/dm/views/", params=q)
    assert views.status_code == 200 and [v["data"]["filters"]["items"] for v in views.json()] == [
        []
    ]
    made = a.session.post("/api/dm/views/", params=q, json={"data": {}}, headers=h)
    assert made.status_code == 201
    staff_views = plugged.admin.request("GET", "/api/dm/views/", params=q).json()
    assert all(v["user"] != a.id for v in staff_views)  # nothing was saved
    tasks = a.session.get("/api/tasks/", params={**q, "page": 1, "page_size": 30})
    assert tasks.json()["tasks"] == [] and tasks.json()["total"] == 0
    links = a.session.get("/api/label_links/", params=q)
    assert links.json()["results"] == []
    dm_project = a.session.get("/api/dm/project/", params=q)
    assert dm_project.status_code == 200 and "created_by" not in dm_project.json()
    _no_one_else(dm_project.text, plugged, world)
    columns = a.session.get("/api/dm/columns/", params=q)
    assert columns.status_code == 200
    history = a.session.get(f"/api/projects/{world.project}/label-stream-history/")
    assert history.status_code == 200
    # the stream's "next task" action is the Community queue, and only that action
    nxt = a.session.post(
        "/api/dm/actions/", params={**q, "id": "next_task"}, json={}, headers=h,
        follow_redirects=False,
    )  # fmt: skip
    assert nxt.status_code == 303
    assert nxt.headers["location"] == f"/api/projects/{world.project}/next/"
    delete = a.session.post(
        "/api/dm/actions/", params={**q, "id": "delete_tasks"}, json={}, headers=h
    )
    assert delete.status_code == 403
    other = a.session.get("/api/dm/views/", params={"project": world.project + 999})
    assert other.status_code == 403
    page = a.session.get(f"/projects/{world.project}/data/", params={"labeling": 1})
    assert "localStorage" in page.text and "RectangleTool-dynamic" in page.text


def test_skip_is_a_cancelled_annotation(plugged: Plugged, world: World) -> None:
    b, h = world.b, world.b.csrf_headers(plugged.url)
    task = b.session.get(f"/api/projects/{world.project}/next").json()["id"]
    skip = b.session.post(
        f"/api/tasks/{task}/annotations/", json={"result": [], "was_cancelled": True}, headers=h
    )
    assert skip.status_code == 201, skip.text[:200]
    assert skip.json()["was_cancelled"] is True


def test_pages(plugged: Plugged, world: World) -> None:
    a = world.a
    assert a.session.get("/").headers.get("location") == policy.ME_URL
    assert a.session.get("/projects/").headers.get("location") == policy.ME_URL
    me = a.session.get(policy.ME_URL)
    assert me.status_code == 200 and a.email in me.text
    assert re.search(r'id="annotations">\s*1\s*<', me.text)
    page = a.session.get(f"/projects/{world.project}/data/", params={"labeling": 1})
    assert page.status_code == 200
    assert a.session.get(f"/projects/{world.project}/settings/").status_code == 403


# -- staff ---------------------------------------------------------------------------------
def test_staff_keep_every_right(plugged: Plugged, world: World) -> None:
    admin = plugged.admin
    pid = admin.ensure_project(f"staff-{secrets.token_hex(3)}", "<View><Image name='image' "
                               "value='$image'/></View>", 1)  # fmt: skip
    admin.set_overlap(pid, 3)
    assert admin.project(pid).overlap == 3
    report = admin.import_images(pid, [("s.png", _png(99))])
    assert report.created == 1
    exported = admin.export_tasks(world.project)
    assert any(a.get("ground_truth") for t in exported for a in t["annotations"])
    assert {p.model_version for p in admin.predictions(world.task_a)} == {"consensus-staple"}
    emails = set(admin.users().values())
    assert {world.a.email, world.b.email, plugged.admin_email} <= emails
    assert admin.request("GET", "/api/ml/", params={"project": pid}).status_code == 200
    # the promoted expert has staff rights, the demoted one loses them
    e, h = world.expert, world.expert.csrf_headers(plugged.url)
    assert (
        e.session.patch(f"/api/projects/{pid}/", json={"title": "by expert"}, headers=h).status_code
        == 200
    )
    admin.request("POST", "/medcrowd/api/roles/", json={"email": e.email, "role": "volunteer"})
    assert e.session.get("/api/users/").status_code == 403
    admin.request("POST", "/medcrowd/api/roles/", json={"email": e.email, "role": "staff"})
    assert e.session.get("/api/users/").status_code == 200


def test_roles_api_is_staff_only(plugged: Plugged, world: World) -> None:
    roles = plugged.admin.request("GET", "/medcrowd/api/roles/").json()["users"]
    by_email = {r["email"]: r["role"] for r in roles}
    assert by_email[plugged.admin_email] == "staff"
    assert by_email[world.a.email] == "volunteer" and by_email[world.expert.email] == "staff"
    a = world.a
    token = {"Authorization": f"Token {a.token}"}
    assert httpx.get(f"{plugged.url}/medcrowd/api/roles/", headers=token).status_code == 403
    promote = httpx.post(
        f"{plugged.url}/medcrowd/api/roles/",
        json={"email": a.email, "role": "staff"},
        headers=token,
    )
    assert promote.status_code == 403
    assert httpx.get(f"{plugged.url}/medcrowd/api/invite/", headers=token).status_code == 403
    demote_admin = httpx.post(
        f"{plugged.url}/medcrowd/api/roles/",
        json={"email": plugged.admin_email, "role": "volunteer"},
        headers={"Authorization": f"Token {plugged.admin.token}"},
    )
    assert demote_admin.status_code == 400


# -- invitations and rate limits -----------------------------------------------------------
def test_invitations_expire(plugged: Plugged, world: World) -> None:
    admin = plugged.admin
    link = admin.signup_link()
    assert httpx.get(link).status_code == 200
    token = link.split("token=")[1]
    db = plugged.data_dir / "label-studio" / "label_studio.sqlite3"
    with sqlite3.connect(db) as conn:  # age the invitation past its TTL
        conn.execute(
            "UPDATE medcrowd_lsplugin_invite SET issued_at = '2000-01-01 00:00:00' WHERE token = ?",
            (token,),
        )
    expired = httpx.get(link)
    assert expired.status_code == 403 and "expired" in _detail(expired)
    fresh = admin.signup_link()  # staff asking again get a new link
    assert fresh != link and httpx.get(fresh).status_code == 200
    assert httpx.get(link).status_code == 403
    never_issued = httpx.get(f"{plugged.url}/user/signup/?token=not-a-token")
    assert never_issued.status_code == 403


# -- the CLI's client side -----------------------------------------------------------------
def test_roles_client_and_cli(plugged: Plugged, world: World) -> None:
    from typer.testing import CliRunner

    from medcrowd import roles
    from medcrowd.cli_people import experts_app, volunteers_app

    admin = plugged.admin
    accounts = {acc.email: acc for acc in roles.list_accounts(admin)}
    assert accounts[world.b.email].role == "volunteer"
    assert roles.set_role(admin, world.b.email, "staff").role == "staff"
    assert roles.set_role(admin, world.b.email, "volunteer").role == "volunteer"
    link = roles.signup_link(admin)
    assert "/user/signup/?token=" in link and httpx.get(link).status_code == 200

    conn = ["--url", plugged.url, "--token", admin.token]
    runner = CliRunner()
    listed = runner.invoke(volunteers_app, ["list", *conn], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"{re.escape(world.a.email)}\s*│\s*volunteer", listed.output)
    env = {"MEDCROWD_VOLUNTEER_PASSWORD": PASSWORD}
    made = runner.invoke(experts_app, ["add", "cli-expert@example.com", *conn], env=env)
    assert made.exit_code == 0, made.output
    assert "expert cli-expert@example.com created" in made.output
    demoted = runner.invoke(volunteers_app, ["demote", "cli-expert@example.com", *conn])
    assert demoted.exit_code == 0 and "is now a volunteer" in demoted.output
    refused = runner.invoke(volunteers_app, ["demote", plugged.admin_email, *conn])
    assert refused.exit_code == 1


def test_staff_tools_work_with_the_plugin(plugged: Plugged, world: World, tmp_path: Path) -> None:
    """status, gold, pull, fuse and push, as staff run them, against Label Studio with the
    plugin (the CLI with the admin's token; volunteers' brush masks on the other tasks)."""
    from typer.testing import CliRunner

    from medcrowd.cli import app
    from medcrowd.gold import task_image_stem
    from ml_backend.labeling import brush_result

    admin = plugged.admin
    others = [t for t in world.tasks if t != world.task_a]
    square = np.zeros((32, 32), bool)
    square[8:24, 8:24] = True
    for i, task in enumerate(others):
        for who, shift in ((world.a, 0), (world.b, 1)):
            mask = np.roll(square, shift + i, axis=1)
            admin.request(
                "POST",
                f"/api/tasks/{task}/annotations/",
                json={"result": [brush_result(mask, "Organ")], "completed_by": who.id},
            )
    masks = tmp_path / "gold"
    masks.mkdir()
    data = {t.id: t.data for t in admin.tasks(world.project)}
    stem = task_image_stem(str(data[others[0]]["image"]))
    Image.fromarray(square.astype(np.uint8) * 255).save(masks / f"{stem}.png")
    conn = ["--url", plugged.url, "--token", admin.token]
    runner = CliRunner()
    out = tmp_path / "pulled"
    steps = [
        ["status", "--project", str(world.project), "--json", *conn],
        ["gold", "add", str(masks), "--project", str(world.project), *conn],
        ["pull", str(out), "--project", str(world.project), *conn],
        ["fuse", str(out), "--method", "majority"],
        ["push", str(out), "--method", "majority", *conn],
    ]
    for argv in steps:
        result = runner.invoke(app, argv, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (argv[:2], result.output[-800:])
    assert admin.has_ground_truth(others[0])
    assert (out / "manifest.jsonl").is_file()
    pushed = {p.model_version for t in others for p in admin.predictions(t)}
    assert "consensus-majority" in pushed


def test_zz_login_is_rate_limited(plugged: Plugged) -> None:
    """Last in the module: it spends this client IP's login budget for a minute."""
    client = httpx.Client(base_url=plugged.url, timeout=60.0)
    client.get("/user/login/")
    statuses = []
    for _ in range(RATE_PER_MINUTE + 1):
        resp = client.post(
            "/user/login/",
            data={"email": "nobody@example.com", "password": "wrong",
                  "csrfmiddlewaretoken": client.cookies.get("csrftoken") or ""},
            headers={"Referer": f"{plugged.url}/user/login/"},
        )  # fmt: skip
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert "too many" in _detail(resp)
            break
    assert statuses[-1] == 429 and 200 in statuses
