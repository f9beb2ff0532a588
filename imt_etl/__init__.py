"""imt-etl: REDCap to validated FHIR R4 and analysis-ready parquet for myositis trials."""

__version__ = "0.1.0"
