"""The API's blueprints, one module per resource; each builds its blueprint for one app.

Blueprints are built by functions (`jobs.blueprint(services)`) rather than defined at
module level: every application gets its own blueprint objects closed over its own
dependencies, so two apps in one process (as in the tests) never share state, and
no view reaches for a global to find the job store.
"""
