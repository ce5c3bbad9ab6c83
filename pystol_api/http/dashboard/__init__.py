"""The web dashboard: static HTML, CSS and ES modules served by the API application.

The page itself is public (it holds no data); everything it shows comes from the
`/api/v1` endpoints with the bearer token the user signs in with, exactly as the CLI
does. There is no build step: the files under `static/` are shipped as package data.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, send_from_directory

STATIC_DIR = Path(__file__).parent / "static"
NAME = "dashboard"


def blueprint() -> Blueprint:
    bp = Blueprint(NAME, __name__, static_folder=None)

    @bp.get("/")
    def index() -> Response:
        response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @bp.get("/dashboard/<path:filename>")
    def asset(filename: str) -> Response:
        response = send_from_directory(STATIC_DIR, filename, max_age=0)
        if filename.endswith(".js"):  # ES modules need a JavaScript type, whatever the OS says
            response.mimetype = "text/javascript"
        response.headers["Cache-Control"] = "no-cache"
        return response

    return bp


def install(app: Flask) -> set[str]:
    """Register the dashboard on `app`; the names of its (public) endpoints."""
    app.register_blueprint(blueprint())
    return {f"{NAME}.index", f"{NAME}.asset"}
