"""The page served at /ui/ and the flow picture `fifoflow graph` draws.

``static/`` holds the page's files as served (no build step); ``static/graph.mjs`` draws a
flow (ELK layout, SVG) for both the page and the CLI; ``static/vendor/`` holds vendored
libraries with their licences, re-fetched by ``vendor.py`` (never at test or run time).
"""
