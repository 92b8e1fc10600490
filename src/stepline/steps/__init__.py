"""Declaring a project: step configs, schemas, cron, settings, the loader and the request an API step gets.

No runtime here, and no I/O beyond reading the project's files."""
