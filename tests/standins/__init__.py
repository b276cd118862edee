"""Stand-ins for outside services: local servers that speak the real wire protocols."""
