"""The dispatcher's API: ``fifoflow dispatcher serve`` (operators' routes, runners' link,
web pages' client-runner sockets, OpenAPI)."""
