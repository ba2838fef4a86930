"""Launching and supervising drivers: runners (local process, Ray Job), the study and curvature
driver entry points, reconcile, and the resource check against the cluster."""
