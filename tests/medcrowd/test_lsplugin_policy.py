"""The volunteer allow-list as data (no Label Studio needed; the live matrix is e2e)."""

from __future__ import annotations

import pytest

from medcrowd.lsplugin import policy


@pytest.mark.parametrize(
    ("route", "method", "expected"),
    [
        ("^api/projects/<int:pk>/", "GET", "allowed"),
        ("^api/projects/<int:pk>/", "PATCH", "refused"),  # rename the project
        ("^api/projects/<int:pk>/", "DELETE", "refused"),
        ("^api/tasks/<int:pk>/", "DELETE", "refused"),  # delete a task
        ("^api/tasks/<int:pk>/", "HEAD", "allowed"),  # HEAD is GET
        ("^api/projects/<int:pk>/export", "GET", "refused"),  # export gold
        ("^api/users/$", "GET", "allowed"),  # answered with a stand-in: only themselves
        ("^api/ml/", "GET", "allowed"),  # the labelling page's backend id (filtered)
        ("^api/ml/", "POST", "refused"),  # add an ML backend
        ("^api/ml/<int:pk>", "GET", "refused"),  # ML settings
        ("^api/users/$", "POST", "refused"),
        ("^api/dm/actions/", "GET", "refused"),  # the Data Manager's action list
        ("^api/dm/views/(?P<pk>[^/.]+)/$", "PATCH", "refused"),
        ("^api/tasks/", "POST", "refused"),  # create tasks
        ("^api/ml/<int:pk>/interactive-annotating", "POST", "allowed"),
        ("^api/tasks/<int:pk>/annotations/", "POST", "allowed"),
        ("^api/annotations/<int:pk>/", "DELETE", "refused"),
        ("^$", "GET", "redirect"),
        ("^$", "POST", "refused"),
        ("^api/brand-new-in-label-studio-2/", "GET", "unclassified"),
        ("admin/anything", "GET", "refused"),
    ],
)
def test_decide(route: str, method: str, expected: str) -> None:
    assert policy.decide(route, method) == expected


def test_allowed_rules_use_known_methods() -> None:
    for route, rule in policy.ALLOWED.items():
        assert rule.methods and rule.methods <= set(policy.METHODS), route


def test_writes_allowed_only_on_own_objects() -> None:
    """Every non-GET a volunteer may make is tied to an object check (no blind writes),
    except logging in, signing up, logging out and their own tokens (self-only views)."""
    account = {"^user/login/", "^user/signup/", "^logout/?$", "^api/current-user/reset-token/",
               "^api/token/", "^api/token/refresh/", "^api/token/blacklist/"}  # fmt: skip
    for route, rule in policy.ALLOWED.items():
        if rule.methods - {"GET"} and route not in account:
            assert rule.check != "none", route


def test_reads_of_people_data_are_filtered() -> None:
    for route in ("^api/tasks/<int:pk>/", "^api/projects/<int:pk>/next/"):
        assert policy.ALLOWED[route].filter == "task"
    assert policy.ALLOWED["^api/projects/<int:pk>/"].filter == "project"
    assert policy.ALLOWED["^api/current-user/whoami"].filter == "whoami"


def test_refusal_families_do_not_swallow_allowed_routes_silently() -> None:
    # An allowed route may sit inside a refused family (its other methods are refused); the
    # family must still have a reason to show.
    for route in policy.ALLOWED:
        if route.startswith("^api/"):
            assert policy.refusal_reason(route) is not None, route


def test_data_manager_lists_get_stand_ins() -> None:
    """The labelling stream's lists never reach Label Studio's views for a volunteer."""
    stand_ins = {
        "^api/dm/views/$": "one_view",
        "^api/users/$": "only_me",
        "^api/tasks/": "no_tasks",
        "^api/label_links/$": "no_label_links",
        "^api/dm/actions/": "next_task",
    }
    for route, answer in stand_ins.items():
        rule = policy.ALLOWED[route]
        assert rule.answer == answer, route
        assert rule.check == "project_query", route
    assert policy.ALLOWED["^api/ml/"].filter == "ml_backends"
    assert policy.ALLOWED["^api/dm/project/"].filter == "project"


def test_gold_and_labelling_hooks() -> None:
    assert policy.ALLOWED["^api/annotations/<int:pk>/"].frozen_gold
    assert policy.ALLOWED["^api/projects/<int:pk>/next/"].onboarding
    assert policy.ALLOWED["^projects/<int:pk>/data/"].page_defaults


def test_feedback_mask_is_the_union_of_brush_regions() -> None:
    """The gold feedback's mask: every brushlabels region of an annotation, nothing else."""
    import numpy as np

    from medcrowd.lsplugin.feedback import annotation_mask, dice
    from ml_backend.labeling import brush_result

    a = np.zeros((40, 50), bool)
    a[5:20, 10:30] = True
    b = np.zeros((40, 50), bool)
    b[25:35, 5:15] = True
    box = {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 5, "height": 5}}
    mask = annotation_mask([brush_result(a, "Organ"), box, brush_result(b, "Organ")])
    assert mask is not None and np.array_equal(mask, a | b)
    assert annotation_mask([box]) is None
    assert dice(a, a | b) == 2 * a.sum() / (a.sum() + (a | b).sum())
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
