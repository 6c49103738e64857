"""Evaluation: feature extractors, sample-quality metrics, reports, loss curves and sample grids."""

from components.evaluation.evaluate import (
    EvaluationReport,
    evaluate_checkpoint,
    evaluate_images,
    write_loss_curves,
    write_sample_grid,
)
from components.evaluation.extractors import (
    DomainExtractor,
    FeatureExtractor,
    InceptionV3Extractor,
    build_extractor,
    load_or_train_domain_extractor,
    train_domain_extractor,
)

__all__ = [
    "DomainExtractor",
    "EvaluationReport",
    "FeatureExtractor",
    "InceptionV3Extractor",
    "build_extractor",
    "evaluate_checkpoint",
    "evaluate_images",
    "load_or_train_domain_extractor",
    "train_domain_extractor",
    "write_loss_curves",
    "write_sample_grid",
]
