"""Errors of the local control plane."""


class ControlPlaneError(RuntimeError):
    """A control-plane component could not be built or started; the message names the log."""
