"""carseg: calibrated adversarial refinement for stochastic semantic segmentation."""

__version__ = "0.1.0"
