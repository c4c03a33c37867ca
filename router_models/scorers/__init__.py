"""Scorers: prompt features in, predicted quality of every model out. One module per kind; the table of
kinds is :mod:`router_models.scorers.registry`, filled here (the order is the order candidates are tried in).
"""

from router_models.scorers import blend, cluster, irt, knn, oracle, probe
from router_models.scorers.base import Scorer, brier, column_means, holdout_mask, mean_cost
from router_models.scorers.blend import BlendScorer, blend_part_tags, weighted_sum
from router_models.scorers.cluster import ClusterScorer
from router_models.scorers.knn import KNNScorer
from router_models.scorers.oracle import TaskOracle
from router_models.scorers.probe import ProbeScorer
from router_models.scorers.registry import register, scorer_from_state, scorer_state

for _kind in (probe.KIND, knn.KIND, cluster.KIND, blend.KIND, oracle.KIND, irt.KIND):
    register(_kind)

__all__ = [
    "BlendScorer",
    "ClusterScorer",
    "KNNScorer",
    "ProbeScorer",
    "Scorer",
    "TaskOracle",
    "blend_part_tags",
    "brier",
    "column_means",
    "holdout_mask",
    "mean_cost",
    "scorer_from_state",
    "scorer_state",
    "weighted_sum",
]
