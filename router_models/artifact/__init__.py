"""A trained router on disk: the directory ``format``, ``save``, ``validate`` and ``load``.

Kept free of imports so that :mod:`router_models.router` can use the format without a cycle.
"""
