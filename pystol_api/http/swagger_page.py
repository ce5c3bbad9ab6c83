"""The pages of the API documentation, without inline code, so that the CSP allows them.

flask-openapi3-swagger's page starts Swagger UI from an inline `<script>` and styles
itself with an inline `<style>`; under the API's Content-Security-Policy (no inline code,
`security_headers`) the page would stay blank. Rather than weaken the policy for one
path, the page is replaced (flask-openapi3 reads `SWAGGER_HTML_STRING` at each request)
by one that loads the same bundled Swagger UI assets plus a start-up script and a style
sheet shipped with the dashboard (`/dashboard/swagger-init.js`, `/dashboard/swagger.css`).
The OpenAPI document's URL is passed in a `data-` attribute, not in code. Swagger UI's
"standalone" layout is not used: its top bar (a box to load other documents) draws a logo
with an inline `<style>`, which the policy refuses; the base layout has all the rest.

The index page flask-openapi3 serves at `/api/v1/` (inline styles and a `data:` icon) is
replaced the same way by a plain list of links.

Both pages are public, like the OpenAPI document: they hold no data.
"""

from __future__ import annotations

from flask import Flask

# Relative URLs: the page is served at /api/v1/swagger and /api/v1/docs; `swagger/...` are
# the plug-in's bundled assets under /api/v1/swagger/, `doc_url` is `openapi.json`.
SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Pystol API: Swagger UI</title>
  <link rel="icon" href="swagger/images/swagger.svg">
  <link rel="stylesheet" href="swagger/css/swagger-ui.css">
  <link rel="stylesheet" href="/dashboard/swagger.css">
  <script src="swagger/js/swagger-ui-bundle.js" defer></script>
  <script src="/dashboard/swagger-init.js" defer></script>
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{{ doc_url }}"></div>
</body>
</html>
"""

INDEX_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Pystol API documentation</title>
  <link rel="stylesheet" href="/dashboard/swagger.css">
</head>
<body class="doc-index">
  <h1>Pystol API documentation</h1>
  <ul>
    {% for ui in ui_templates %}<li><a href="{{ ui.name }}">{{ ui.display_name }}</a></li>
    {% endfor %}<li><a href="openapi.json">The OpenAPI document (JSON)</a></li>
  </ul>
</body>
</html>
"""


def install(app: Flask) -> None:
    """Serve the documentation pages above instead of flask-openapi3's."""
    app.config["SWAGGER_HTML_STRING"] = SWAGGER_PAGE
    app.config["OPENAPI_HTML_STRING"] = INDEX_PAGE
