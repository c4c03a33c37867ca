"""Features: prompt text → backbone hidden states → SAE latents → one pooled row per prompt.

``backbone`` (hidden states), ``sae`` / ``routesae`` (the sparse autoencoders and their training loops),
``encoder`` (a saved SAE as a latent map), ``pooling`` (:class:`~router_models.features.pooling.PromptFeatures`),
``cache`` (rows on disk), ``labels`` (names for latents), ``embeddings`` (dense sentence embeddings for the
harness) and ``spec`` (how a router's features are computed, as written in its manifest).
"""
