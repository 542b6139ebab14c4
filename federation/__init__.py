"""The StreamQL federation service: registry, selection index, authentication, HTTP API.

Entry points: `federation.app.create_app(FederationConfig(...))` and `federation.cli`.
"""
