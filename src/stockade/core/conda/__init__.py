"""conda channels: package names and files, package validation, repodata and CEP-16 shards."""
