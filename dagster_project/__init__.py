"""Dagster front end of imt-etl: thin assets over the library, resources, schedules and sensors."""
