"""Adapters that put the Stopline gate in front of the agent frameworks people already use.

Each adapter is an optional extra and imports its framework only when it is imported:

- ``policy_engine.integrations.langgraph`` (``pip install 'stopline[langgraph]'``)
- ``policy_engine.integrations.openai_agents`` (``pip install 'stopline[openai-agents]'``)
- ``policy_engine.integrations.mcp`` (``pip install 'stopline[mcp]'``)

``policy_engine.integrations.common`` (no framework) holds the shared gate/approval glue:
``ToolGate`` (gate a tool call on a ``Runtime``, accept an approval, record the execution)
and ``Approval`` (the value a reviewer gives back). See docs/integrations.md.
"""
