"""Label Studio's URL configuration plus the plugin's ``/medcrowd/...`` pages and API."""

from __future__ import annotations

from core.urls import urlpatterns as _label_studio_urlpatterns
from django.urls import path

from medcrowd.lsplugin import views

urlpatterns = [
    path("medcrowd/me", views.me, name="medcrowd-me"),
    path("medcrowd/me/overlay/<int:annotation_id>.png", views.overlay, name="medcrowd-overlay"),
    path("medcrowd/api/roles/", views.roles_api, name="medcrowd-roles"),
    path("medcrowd/api/invite/", views.invite_api, name="medcrowd-invite"),
    *_label_studio_urlpatterns,
]
