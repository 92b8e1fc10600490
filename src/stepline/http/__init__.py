"""The ASGI side: API steps as routes, Stepline's own admin API and Workbench page, request limits."""
