"""Label Studio's own settings plus the medcrowd plugin.

Label Studio's ``label-studio start`` (``label_studio/server.py``) and ``manage.py`` only
``setdefault`` ``DJANGO_SETTINGS_MODULE``, so starting it with
``DJANGO_SETTINGS_MODULE=medcrowd.lsplugin.settings`` in the environment loads this module.
It imports everything from ``label_studio.core.settings.label_studio`` and adds the app, its
middleware (before Django's CSRF check) and a URL configuration holding Label Studio's URLs
plus ``/medcrowd/...``.

Like Label Studio's settings, the plugin's knobs come from the environment:

* ``MEDCROWD_INVITE_TTL_S``: how long a signup link stays valid after staff first read it
  (default 7 days); an expired one is replaced when staff ask for the link again.
* ``MEDCROWD_AUTH_RATE_PER_MINUTE``: login or signup POSTs per client IP per minute (default
  20); the next one is answered 429.
* ``MEDCROWD_ONBOARDING_GOLD``: a new volunteer's first N tasks of a project are gold tasks
  (with feedback on their page), when the project has gold (default 0: off).
"""

from __future__ import annotations

import os
import sys

import label_studio

# Label Studio's modules import each other as top-level packages ("core", "tasks", ...).
_LS_PATH = os.path.dirname(label_studio.__file__)
if _LS_PATH not in sys.path:
    sys.path.insert(0, _LS_PATH)

# Label Studio's settings read ``django.conf.settings`` while they are being imported (Sentry
# set-up): Django then loads DJANGO_SETTINGS_MODULE a second time, re-entrantly. Pointing that
# nested load at Label Studio's module (which has those values by then) and restoring ours
# afterwards gives the same sequence as a plain ``label-studio start``; the outer load, of this
# module, is the one Django keeps.
_OURS = os.environ.get("DJANGO_SETTINGS_MODULE")
os.environ["DJANGO_SETTINGS_MODULE"] = "label_studio.core.settings.label_studio"
try:
    from label_studio.core.settings.label_studio import *  # noqa: F403
    from label_studio.core.settings.label_studio import INSTALLED_APPS, MIDDLEWARE
finally:
    if _OURS is None:
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = _OURS

INSTALLED_APPS = [*INSTALLED_APPS, "medcrowd.lsplugin.apps.MedcrowdPluginConfig"]
# Before Django's CSRF check (and Label Studio's last-activity update): a volunteer's refused
# request is answered by the policy, whatever else is wrong with it. Its ``process_view``
# still runs after every middleware's request phase, so the session's user is known.
_AT = MIDDLEWARE.index("django.middleware.csrf.CsrfViewMiddleware")
MIDDLEWARE = [*MIDDLEWARE[:_AT], "medcrowd.lsplugin.middleware.RoleMiddleware", *MIDDLEWARE[_AT:]]
ROOT_URLCONF = "medcrowd.lsplugin.urls"

MEDCROWD_INVITE_TTL_S = float(os.environ.get("MEDCROWD_INVITE_TTL_S", 7 * 24 * 3600))
MEDCROWD_AUTH_RATE_PER_MINUTE = int(os.environ.get("MEDCROWD_AUTH_RATE_PER_MINUTE", 20))
MEDCROWD_ONBOARDING_GOLD = int(os.environ.get("MEDCROWD_ONBOARDING_GOLD", 0))
