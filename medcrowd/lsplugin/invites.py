"""Expiring signup links.

Label Studio has one invitation token per organisation and it never expires. The plugin
records when staff were first handed a token (``GET /api/invite`` or
``/medcrowd/api/invite/``); a signup with a token that was never handed out, or was handed out
more than ``MEDCROWD_INVITE_TTL_S`` seconds ago, is refused. When staff ask for the link and
the current one has expired, the organisation's token is replaced first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from medcrowd.lsplugin.models import Invite

__all__ = ["current_invite", "expires_at", "rotate", "token_is_live"]


def _ttl() -> timedelta:
    return timedelta(seconds=float(settings.MEDCROWD_INVITE_TTL_S))


def expires_at(invite: Invite) -> datetime:
    issued: datetime = invite.issued_at
    return issued + _ttl()


def current_invite(organization: Any) -> Invite:
    """The organisation's live invitation, replacing the token if it has expired."""
    now = timezone.now()
    invite = Invite.objects.filter(token=organization.token).first()
    if invite is None:
        return Invite.objects.create(
            token=organization.token, organization_id=organization.pk, issued_at=now
        )
    if expires_at(invite) <= now:
        return rotate(organization)
    return invite


def rotate(organization: Any) -> Invite:
    """Replace the organisation's token now (the old link stops working)."""
    organization.reset_token()
    return Invite.objects.create(
        token=organization.token, organization_id=organization.pk, issued_at=timezone.now()
    )


def token_is_live(token: str) -> bool:
    """True when ``token`` is the organisation's current token and has not expired."""
    from organizations.models import Organization

    invite = Invite.objects.filter(token=token).first()
    if invite is None or expires_at(invite) <= timezone.now():
        return False
    return Organization.objects.filter(token=token).exists()
