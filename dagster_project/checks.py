"""One blocking asset check per instrument table: the dictionary rules run with pandera.

The check passes when every row with an error finding is quarantined and the rest is valid
(extracted = valid + quarantined); its metadata counts the findings and shows the first few in
a markdown table. It fails, and blocks the stages below it, when the rules cannot be applied
(e.g. the table no longer matches the data dictionary) or the invariant breaks.
"""

# No `from __future__ import annotations`: Dagster reads the runtime annotations.
import dagster as dg

from dagster_project.resources import ProjectsResource
from dagster_project.stage import instrument_key
from imt_etl import pipeline
from imt_etl.errors import ImtEtlError
from imt_etl.validate.dictionary_schema import build_schema, run_schema
from imt_etl.validate.quarantine import check_invariant, findings_frame, split_table

SHOWN = 10


def _first_findings(frame) -> str:
    rows = ["| record | event | field | value | rule | message |", "|---|---|---|---|---|---|"]
    for f in frame.head(SHOWN).itertuples():
        rows.append(f"| {f.record_id} | {f.event} | {f.field} | {f.value} | {f.rule_id} | "
                    f"{str(f.message).replace('|', '/')} |")
    return "\n".join(rows)


def instrument_check(form: str, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=instrument_key(form), name="dictionary_rules", blocking=True,
                    partitions_def=partitions,
                    description=f"Data-dictionary rules (pandera) on `{form}`: failing rows are "
                    "quarantined, the rest flows on.")
    def _check(context: dg.AssetCheckExecutionContext,
               projects: ProjectsResource) -> dg.AssetCheckResult:
        spec = projects.spec(context.partition_key)
        try:
            meta, snapshot = pipeline.load_extraction_inputs(spec.out_dir)
            table = pipeline.tidy_form(meta, snapshot, form).tables[form]
            findings = findings_frame(run_schema(build_schema(meta, form), table))
            valid, quarantined = split_table(form, table, findings)
            check_invariant(form, table, valid, quarantined)
        except ImtEtlError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
        return dg.AssetCheckResult(
            passed=True,
            metadata={
                "rows": len(table), "valid": len(valid), "quarantined": len(quarantined),
                "findings": len(findings),
                "first_findings": dg.MetadataValue.md(_first_findings(findings)),
            },
        )

    return _check


def build_checks(forms: list[str], partitions: dg.PartitionsDefinition
                 ) -> list[dg.AssetChecksDefinition]:
    return [instrument_check(form, partitions) for form in forms]
