"""One module per family of procedures; each exports PROCEDURES, a tuple of registry entries."""
