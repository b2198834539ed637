"""fleetflow's console scripts."""
