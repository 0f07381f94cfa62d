"""The rollout: pure analysis of canary metrics and the state machine that moves weights."""
