"""Study and data-quality reports (HTML with PNG figures)."""
