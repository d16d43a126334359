"""mapper: 10 m maps of near-surface permafrost and soil taxonomic order for Alaska with MiSo.

All real logic of the Snakemake workflow lives here; the rules call ``python -m mapper <command>``.
"""

__version__ = "0.1.0"
