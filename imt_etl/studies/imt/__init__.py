"""The reference IMT trial (NCT07274267): its REDCap project and synthetic data."""
