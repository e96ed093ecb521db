"""npuctl: declarative model deployment for Qualcomm Hexagon NPUs."""

__version__ = "0.1.0"
