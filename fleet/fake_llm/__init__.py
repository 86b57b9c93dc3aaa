"""A local OpenAI-compatible Chat Completions server for tests and newcomers
(``fleet fake-llm``), scripted and observed over HTTP from any process.

- ``chat.py``: the request, checked as OpenAI checks it;
- ``script.py``: scripted replies and the rule that picks one for a request;
- ``wire.py``: the answer as ``chat.completion`` or SSE ``chat.completion.chunk``s;
- ``answer.py``: sending it at the scripted pace, seeing the client go away;
- ``journal.py``: what was asked and what became of it;
- ``app.py``: the routes; ``server.py``: the process.
"""
