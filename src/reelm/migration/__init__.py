"""Region migration: move users' protected data to another region, verify it, switch the
directory, purge the source (keys destroyed) and attest every step in the public logs."""
