"""Agents: the LLM client, tools, memory, approvals, the code sandbox, MCP tools and evals."""
