"""credward: service-account identities for automation clients on Kubernetes."""

__version__ = "0.1.0"
