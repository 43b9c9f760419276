"""Running the OS by asking it in plain language: a request -> a plan of the daemon's own route calls
(embedding model for the operation, the caller's names and the chat model under constrained decoding for
the arguments) -> shown, confirmed, run step by step with the caller's key, each step audited."""
