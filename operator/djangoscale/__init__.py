"""djangoscale: run and autoscale Django web apps on Kubernetes."""

__version__ = "0.1.0"
