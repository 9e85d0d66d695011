"""The workflow's Lambda functions, each a construct that owns its grants."""
