"""Browser-facing protections on every response: the API's JSON, the dashboard, the docs.

The dashboard holds a bearer token that can delete pods, so the page must not run code it
did not ship, nor be framed by another site (clickjacking a "Run job" button), nor have
its responses reinterpreted as another content type:

- `Content-Security-Policy`: scripts, styles, fonts and fetches from this origin only;
  nothing inline (no `'unsafe-inline'`, no `'unsafe-eval'`), so an injected `<script>` or
  `onerror=` attribute does not run; `frame-ancestors 'none'` (no framing), `object-src
  'none'` (no plug-ins), `base-uri 'none'` (no `<base>` rewriting relative URLs),
  `form-action 'self'`. Images may also be `data:` URLs (Swagger UI's icons are).
  The dashboard and the Swagger page (`swagger_page`) carry no inline code, so one policy
  fits every path.
- `X-Frame-Options: DENY`: the same as `frame-ancestors` for browsers without CSP 2.
- `X-Content-Type-Options: nosniff`: a JSON answer echoing user text is never run as a
  script or rendered as HTML.
- `Referrer-Policy: no-referrer`: job ids and namespaces in dashboard URLs do not leak to
  other sites.
- `Cross-Origin-Opener-Policy: same-origin`: a page opened from the dashboard gets no
  handle on it.

HSTS is left to whatever terminates TLS (the chart's Ingress): this server speaks plain
HTTP, where the header means nothing.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "manifest-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "object-src 'none'",
    "base-uri 'none'",
))

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def install(app: Flask) -> None:
    """Add the headers to every response of `app`, errors included.

    Flask runs `after_request` hooks in the reverse order of registration: install this
    first, so that it also covers responses another hook replaces (a refused stream)."""

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        return response
