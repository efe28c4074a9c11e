"""The plugin's tables: roles, tasks served to volunteers, invitation tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models

STAFF = "staff"
VOLUNTEER = "volunteer"
ROLE_CHOICES = [(STAFF, "staff (admin, expert)"), (VOLUNTEER, "volunteer")]


class Role(models.Model):
    """An account's role. No row means volunteer (except superusers, always staff)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="medcrowd_role"
    )
    role = models.CharField(max_length=16, choices=ROLE_CHOICES, default=VOLUNTEER)
    updated_at = models.DateTimeField(auto_now=True)


class ServedTask(models.Model):
    """A task ``/api/projects/{id}/next`` handed to a volunteer (they may read it later)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="medcrowd_served"
    )
    task_id = models.IntegerField(db_index=True)
    project_id = models.IntegerField()
    served_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [  # noqa: RUF012 - Django reads plain class attributes
            models.UniqueConstraint(fields=["user", "task_id"], name="medcrowd_served_once")
        ]


class Invite(models.Model):
    """When an organisation's signup token was first handed to staff (it expires after a TTL)."""

    token = models.CharField(max_length=256, unique=True)
    organization_id = models.IntegerField()
    issued_at = models.DateTimeField()
