"""Train: fit SAEs (``sae``), pick and calibrate a scorer (``selection``, ``calibration``), train a router
end to end (``router``) and add models to a trained one (``onboard``).
"""
