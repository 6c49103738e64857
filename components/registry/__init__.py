"""MLflow registry: one run per family per retrain, model versions with lineage, the promotion gate, rollback.

Only this package talks to MLflow. The retrain flow calls, per family:
``log_family_run`` → ``register_version`` → ``promote_version``; the CLI calls
``promote_version``, ``rollback`` and ``generate_from_registry``.
"""
