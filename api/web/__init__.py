"""The node's web pages: Swagger UI at ``/docs`` and the public verification page ``/v/{id}``.

Every script and style sheet is served by the node itself (``api.web.assets``): third-party files
come from pinned npm packages in ``node_modules``, the project's own from ``api/web/static``.
Nothing is loaded from the internet, because hospital networks are isolated.
"""
