"""How fleetflow runs its flows: one interface, three implementations.

The launcher decides which node needs which flow and hands it to a
:class:`~fleetflow.execution.base.FlowRunner`:

- :class:`~fleetflow.execution.local.LocalRunner` runs flows in this
  process, on a bounded pool of workers;
- :class:`~fleetflow.execution.processes.ProcessRunner` runs a
  ``LocalRunner`` in each of several flow processes of the launcher, to
  use every core, and keeps their waits in the launcher (the default of
  a launcher without a jobboard on a machine with several CPUs);
- :class:`~fleetflow.execution.posting.JobboardRunner` records each flow
  and posts it as a job on a TaskFlow jobboard, where
  :class:`~fleetflow.execution.conductor.Conductor` s on any host claim
  and run it.

All record a flow the same way (:meth:`~fleetflow.execution.base.
FlowRunner.record_flow`: the flow detail in the node's logbook, with the
factory's kind and inputs), take flows from the registry only
(:mod:`fleetflow.flows.registry`), and wait the same way
(:mod:`fleetflow.execution.waits`). :mod:`fleetflow.execution.board` holds
the jobboard's configuration and clients, :mod:`fleetflow.execution.
service` assembles what ``fleetflow-launcher`` runs, and
:mod:`fleetflow.execution.taskflow_overrides` is the one module that
reaches past TaskFlow's public API.
"""
