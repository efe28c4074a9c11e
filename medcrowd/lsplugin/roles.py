"""Who is staff and who is a volunteer.

The role lives in the plugin's own table (:class:`~medcrowd.lsplugin.models.Role`, created by
the app's migration on SQLite and PostgreSQL alike) rather than in a Django ``Group``: a
one-row-per-user table with a fixed set of values is simpler to query in the hot path, to list
and to migrate, and it cannot be confused with Django's permission machinery (which Label
Studio Community does not consult anyway).

Rules:

* a superuser (the admin ``label-studio start`` creates) is always staff;
* an account with a ``Role`` row has that role — the migration gives every account that
  existed before the plugin was installed a ``staff`` row;
* any other account — every one made through the signup link, or by anyone after the plugin
  was installed — is a volunteer until staff promote it.
"""

from __future__ import annotations

from typing import Any

from medcrowd.lsplugin.models import STAFF, VOLUNTEER, Role

__all__ = ["ROLES", "STAFF", "VOLUNTEER", "is_staff", "role_of", "set_role"]

ROLES = (STAFF, VOLUNTEER)


def role_of(user: Any) -> str:
    """``"staff"`` or ``"volunteer"`` for an authenticated user."""
    if user.is_superuser:
        return STAFF
    row = Role.objects.filter(user_id=user.pk).values_list("role", flat=True).first()
    return STAFF if row == STAFF else VOLUNTEER


def is_staff(user: Any) -> bool:
    return role_of(user) == STAFF


def set_role(user: Any, role: str) -> str:
    """Give ``user`` the role ``role``; returns the role now in force.

    Raises:
        ValueError: an unknown role, or demoting a superuser (always staff).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if user.is_superuser and role != STAFF:
        raise ValueError(f"{user.email} is a superuser and always staff")
    Role.objects.update_or_create(user_id=user.pk, defaults={"role": role})
    return role_of(user)
