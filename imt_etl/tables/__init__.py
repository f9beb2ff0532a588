"""Analysis-ready parquet tables and their codebook."""
