"""Streaming replies: the chat model, the fast decode loop, the decode child process, decode threads."""
