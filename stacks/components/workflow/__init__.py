"""The fine-tuning state machine: its definition in sub-flows and the construct that deploys it."""
