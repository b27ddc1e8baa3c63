"""privtool: train under differential privacy, attack, select public data, calibrate."""

__version__ = "0.1.0"
