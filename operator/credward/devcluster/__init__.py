"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for development and tests."""

from credward.devcluster.build import Builder, default_cache_dir
from credward.devcluster.errors import ControlPlaneError
from credward.devcluster.plane import ControlPlane, free_port

__all__ = ["Builder", "ControlPlane", "ControlPlaneError", "default_cache_dir", "free_port"]
