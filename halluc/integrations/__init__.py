"""halluc inside other tools: lmms-eval's model plugin (`lmms-eval --model halluc`).

A layer above the API: these modules use `halluc.api` the way a user would, and nothing imports them
(the tools find them through entry points).
"""
