"""The Django app config of the plugin."""

from __future__ import annotations

from django.apps import AppConfig


class MedcrowdPluginConfig(AppConfig):
    name = "medcrowd.lsplugin"
    label = "medcrowd_lsplugin"
    verbose_name = "medcrowd roles"
    default_auto_field = "django.db.models.AutoField"
