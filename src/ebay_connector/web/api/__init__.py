"""The HTTP API for programs and admins; assembled with the UI by :mod:`ebay_connector.web.app`."""
