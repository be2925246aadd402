"""hydrodeploy: deploy, profile and automatically scale protocols written in sugared Dedalus."""

__version__ = "0.1.0"
