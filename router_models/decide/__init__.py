"""Decide: predicted quality and cost in, a model out. Pure numpy, no I/O.

``policy`` (argmax of quality − λ·cost), ``costs`` (the cost model), ``engine`` (the
:class:`~router_models.decide.engine.RoutingEngine` contract and ``decide``) and ``explain`` (why this model).
"""
