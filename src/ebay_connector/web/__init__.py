"""The web edge: the HTTP API, the admin UI, and the views that render records for people.

:func:`ebay_connector.web.app.create_app` assembles the application from a runtime.
"""
