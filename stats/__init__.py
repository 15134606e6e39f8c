"""Statistics: background fits, pyhf workspaces, inference, scans and plots.

This package takes histograms (``hist`` objects or arrays of counts and edges) and likelihood specifications;
it never imports ``processors``.
"""
