"""Pure decision and model code: no sockets, no asyncio, no ssl, no sqlite, no HTTP.

Everything here is a function of its arguments (clocks and randomness are passed in),
so it is reused unchanged by the server, the agent, the proxy and the CLI.
"""
