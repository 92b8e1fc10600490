"""The financial-report example's own code: fixture data, figures and rendering, imported by its steps."""
