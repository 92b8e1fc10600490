"""The runtime: the engine that emits, claims, runs, retries and dead-letters; contexts, cron and traces.

It knows no LLM, no HTTP and no particular store: those reach it through the Protocols of
`stepline.adapters.base` and what the app injects."""
