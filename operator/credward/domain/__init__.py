"""Pure logic: no I/O, no kopf, no HTTP, no Kubernetes client. Time is always passed in."""
