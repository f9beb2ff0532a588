"""Re-running on unchanged data rewrites identical files: no duplicates, nothing to re-publish."""


def test_second_run_on_unchanged_data_is_byte_identical(demo_runs):
    _, first, second, _ = demo_runs
    assert any(name.endswith(".ndjson") for name in first)
    assert any(name.startswith("fhir/bundles/bundle-") for name in first)
    assert sorted(first) == sorted(second)
    changed = [name for name in first if first[name] != second[name]]
    assert changed == []
