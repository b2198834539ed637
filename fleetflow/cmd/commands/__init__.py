"""The commands of the ``fleetflow`` admin CLI."""
