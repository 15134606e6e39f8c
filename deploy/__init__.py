"""The composition root: Dask cluster factories, the end-to-end pipeline and the ``opendata-stats`` command."""
