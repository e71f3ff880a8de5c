"""The control plane: the controller, its policies' state, and the fleet it runs.

Rooms: ``controller`` (its state, status and state file) over ``fleet`` (nodes, heartbeats,
the autoscaling loop), ``jobs`` (registration, tickets, weight maps handed out) and
``placement`` (where a job's share goes, and the weight maps that follow); ``state`` (records
of nodes and jobs, the state file), ``server`` (the controller's TCP service),
``provisioners`` and ``kubernetes`` (starting and stopping nodes), ``processes`` (a node as a
child process), ``accounting`` (what each job used and cost), ``status`` (``pocket status``),
``cluster`` (LocalCluster: a controller and its nodes on this machine). The controller talks
to nodes and clients only through the protocol.
"""
