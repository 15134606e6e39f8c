"""Exceptions raised by the deployment layer (configuration, clusters, servers)."""

from __future__ import annotations


class DeployError(Exception):
    """Bad configuration or an unreachable cluster, reported in one line by the command line."""
