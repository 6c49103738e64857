"""Prefect flows (orchestration only): the retrain flow lands with the pipeline issue."""
