"""The HTTP API: FastAPI app built by :func:`create_app` from a runtime."""

from ebay_connector.web.api.app import create_app

__all__ = ["create_app"]
