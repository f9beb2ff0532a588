"""FHIR R4 output: builders, ids, bundle/NDJSON writers, validation and publishing."""
