"""The REDCap side: client, dictionary, project XML, tidy tables and the emulator."""
