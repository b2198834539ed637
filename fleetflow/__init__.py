"""fleetflow: pools of cloud nodes kept ready by persisted TaskFlow flows."""
