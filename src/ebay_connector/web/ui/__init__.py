"""The admin web UI: server-rendered pages (Jinja2) over the same runtime as the API."""
