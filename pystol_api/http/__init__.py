"""The HTTP API and the dashboard: the Flask application, its routes, problems, auth,
`/metrics`, and the gunicorn server that runs it.
"""
