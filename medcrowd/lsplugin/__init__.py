"""medcrowd's Label Studio plugin: staff and volunteer roles, enforced on every request.

Label Studio Community gives every member of an organisation every right (rename or delete
projects, export every annotation including gold, list every e-mail). This Django app, loaded
into Label Studio through the settings module :mod:`medcrowd.lsplugin.settings`
(``DJANGO_SETTINGS_MODULE=medcrowd.lsplugin.settings label-studio start``), adds:

* a role per account (:mod:`.roles`, stored in the app's own table): staff or volunteer;
* a middleware (:mod:`.middleware`) that lets volunteers reach only the routes the allow-list
  :mod:`.policy` names, checks the objects they touch are theirs, and strips other people's
  work from the task JSON they read;
* expiring invitation links and rate-limited login/signup;
* ``/medcrowd/me`` (a volunteer's page) and the staff JSON API ``/medcrowd/api/roles/`` and
  ``/medcrowd/api/invite/`` (:mod:`.views`).

Only :mod:`.policy` may be imported outside Label Studio's Django environment.
"""
