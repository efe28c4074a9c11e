"""Every account that exists when the plugin is installed keeps today's rights: staff."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations


def existing_users_are_staff(apps: Any, schema_editor: Any) -> None:
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    user_model = apps.get_model(app_label, model_name)
    role_model = apps.get_model("medcrowd_lsplugin", "Role")
    have = set(role_model.objects.values_list("user_id", flat=True))
    role_model.objects.bulk_create(
        [
            role_model(user_id=pk, role="staff")
            for pk in user_model.objects.values_list("pk", flat=True)
            if pk not in have
        ]
    )


class Migration(migrations.Migration):
    dependencies = [  # noqa: RUF012 - Django reads plain class attributes
        ("medcrowd_lsplugin", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(existing_users_are_staff, migrations.RunPython.noop)]  # noqa: RUF012
