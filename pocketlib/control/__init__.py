"""The control plane: the controller, its policies' state, and the fleet it runs.

Rooms: ``controller`` (jobs, allocation, heartbeats, the autoscaling loop), ``placement``
(where a job's share goes, and the weight maps that follow), ``state`` (records of nodes and
jobs, the state file), ``server`` (the controller's TCP service), ``provisioners`` and
``kubernetes`` (starting and stopping nodes), ``accounting`` (what each job used and cost),
``status`` (``pocket status``), ``cluster`` (LocalCluster: a controller and its nodes on this
machine). The controller talks to nodes and clients only through the protocol.
"""
