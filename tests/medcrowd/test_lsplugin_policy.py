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
        ("^api/users/$", "GET", "refused"),  # every e-mail
        ("^api/ml/", "GET", "refused"),  # ML settings
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
