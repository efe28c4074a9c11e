"""Every route of the running URL configuration, as ``ResolverMatch.route`` spells it.

Used by the permission test (run inside Label Studio's Django environment) to check that the
allow-list in :mod:`medcrowd.lsplugin.policy` classifies each one. Django joins nested
patterns the way :func:`join_route` does (``URLResolver._join_route``: the inner pattern's
leading ``^`` is dropped when there is an outer one), so the strings here are exactly the keys
the middleware looks up.
"""

from __future__ import annotations

from typing import Any

__all__ = ["all_routes", "join_route"]


def join_route(outer: str, inner: str) -> str:
    if not outer:
        return inner
    return outer + inner.removeprefix("^")


def _walk(patterns: Any, prefix: str, out: list[str]) -> None:
    from django.urls import URLResolver

    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _walk(pattern.url_patterns, join_route(prefix, str(pattern.pattern)), out)
        else:
            out.append(join_route(prefix, str(pattern.pattern)))


def all_routes(urlconf: str | None = None) -> list[str]:
    """The routes of ``urlconf`` (default: ROOT_URLCONF), in resolution order, deduplicated."""
    from django.urls import get_resolver

    found: list[str] = []
    _walk(get_resolver(urlconf).url_patterns, "", found)
    return list(dict.fromkeys(found))
