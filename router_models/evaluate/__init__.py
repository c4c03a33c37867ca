"""Evaluate: quality–cost curves and their metrics (``metrics``), the router comparison harness (``harness``),
reports (``report``) and the check that a router still gives its recorded outputs (``verify``).
"""
