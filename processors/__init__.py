"""Processing: the GamGam data generator, dataset resolution, the diphoton selection and its coffea processor."""
