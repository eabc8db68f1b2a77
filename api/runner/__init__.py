"""The Runner API: ``fifoflow runner serve`` (HTTP routes, JSON-RPC over ``/ws``, OpenAPI)."""
