"""Where training text comes from: sources (hub, files, offline), conversations, the chat format, tokenizers."""
