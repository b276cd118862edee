"""Small, focused agents: one folder each, with its prompt, tools and policy.

Adding an agent is adding a folder here whose ``__init__.py`` defines
``AGENT = Agent(...)`` and a ``prompt.md`` beside it.
"""
